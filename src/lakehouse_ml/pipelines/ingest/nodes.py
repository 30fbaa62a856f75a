"""Ingest nodes: landing deliveries → bronze → silver (+ quarantine) → gold, with reconciliation.

Every bronze row ends in exactly one of: silver insert, silver update, duplicate dropped,
quarantined. The audit counts each outcome per batch (one batch = one delivered file) and checks
that they add up to the bronze rows.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Iterable
from functools import reduce
from typing import Any

import pandas as pd
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import MapType, StringType, StructField, StructType

from lakehouse_ml.capabilities import json_text
from lakehouse_ml.datasets.delta_versions import DeltaVersions
from lakehouse_ml.datasets.landing import LandingDeliveries
from lakehouse_ml.features.expressions_spark import rounded
from lakehouse_ml.lakehouse import DELETED, changed_rows
from lakehouse_ml.pipelines.ingest.schemas import SCHEMAS, canonical_columns, spark_failures, spark_type

logger = logging.getLogger(__name__)

BRONZE_SCHEMA = (
    "_raw string, _format string, _header string, _source_file string, _decode_error string, _source string, "
    "_delivery_date date, _batch_id string, _ingested_at timestamp"
)
QUARANTINE_COLUMNS = [
    "_batch_id",
    "_source",
    "_source_file",
    "_delivery_date",
    "_ingested_at",
    "_raw",
    "_failed_checks",
]
METADATA_COLUMNS = ["_record_hash", "_batch_id", "_source_file", "_delivery_date", "_ingested_at"]
# Marks a silver upsert whose event silver does not hold yet: appended, never joined in a MERGE
# (SparkDeltaDataset's ``merge_insert_column``).
NEW = "_new"
OUTCOMES = ("inserted", "updated", "duplicate", "quarantined")
AUDIT_SCHEMA = (
    "batch_id string, source string, delivery_date date, source_file string, "
    "bronze_rows bigint, inserted bigint, updated bigint, duplicate bigint, "
    "quarantined bigint, balanced boolean, quarantine_rate double, "
    "top_failed_checks string, unexpected_columns string"
)
GOLD_KEYS = ["customer_id", "activity_date"]
# Table property of gold: the silver versions (per source) its rows reflect.
GOLD_SOURCE_VERSIONS = "lakehouse_ml.gold.source_versions"
# What tells two versions of a silver event apart (the content hash leaves out the delivery time,
# which gold keeps as last_delivered_at).
SILVER_CHANGE_COLUMNS = ["event_id", "event_ts", "delivered_at", "_record_hash"]
_DELIVERY = re.compile(r"^(\d{4}-\d{2}-\d{2})/")
# The CSV delimiter of exports whose fields are separated by runs of blanks (fixed-width text).
WHITESPACE = "whitespace"


class QuarantineRateExceeded(RuntimeError):
    """A batch has more quarantined records than the configured maximum rate."""


# ---------------------------------------------------------------- landing → bronze


def _delivery_date(partition_id: str) -> str:
    """Return the delivery date of a landing file from its folder (``YYYY-MM-DD/<file>``)."""
    match = _DELIVERY.match(partition_id)
    if not match:
        raise ValueError(
            f"landing file '{partition_id}': expected it inside a delivery folder named "
            "YYYY-MM-DD (e.g. 2026-01-31/orders.jsonl)"
        )
    return match.group(1)


def batch_id(source: str, partition_id: str) -> str:
    """Return the batch id of one delivered file: ``<source>/<partition id>``."""
    return f"{source}/{partition_id}"


def select_new_deliveries(
    partition_ids: Iterable[str], ingested_batches: set[str], source: str, full_rebuild: bool
) -> list[str]:
    """Return the partition ids not yet ingested (all of them on a full rebuild), sorted."""
    return sorted(pid for pid in partition_ids if full_rebuild or batch_id(source, pid) not in ingested_batches)


def land_deliveries(
    landing: LandingDeliveries,
    ingest_log: DataFrame,
    source: dict[str, Any],
    ingest: dict[str, Any],
) -> tuple[DataFrame, list[str]]:
    """Read the deliveries not yet ingested as raw bronze rows; return them and their batch ids.

    All new files are read in one engine scan, so the plan stays the same size whatever the
    number of deliveries.
    """
    name = source["name"]
    done = {row["batch_id"] for row in ingest_log.filter(F.col("source") == name).select("batch_id").collect()}
    if ingest.get("full_rebuild") and not landing and done:
        raise ValueError(
            f"{name}: full rebuild found no landing files, but {len(done)} deliveries were ingested "
            "before; refusing to replace bronze/silver with nothing. Check the landing path of "
            f"'{name}_landing@spark' in the catalog."
        )
    new = select_new_deliveries(landing, done, name, bool(ingest.get("full_rebuild")))
    logger.info("%s: %d deliveries available, %d new", name, len(landing), len(new))
    for pid in new:
        _delivery_date(pid)  # a file outside a delivery folder fails here, named, before any read
    bronze = landing.read(new).select(
        "_raw",
        "_format",
        "_header",
        "_source_file",
        "_decode_error",
        F.lit(name).alias("_source"),
        F.to_date(F.regexp_extract("_partition_id", _DELIVERY.pattern, 1)).alias("_delivery_date"),
        F.concat(F.lit(f"{name}/"), F.col("_partition_id")).alias("_batch_id"),
        F.current_timestamp().alias("_ingested_at"),
    )
    return bronze, [batch_id(name, pid) for pid in new]


# ---------------------------------------------------------------- bronze → typed records


def _csv_fields(text: str, delimiter: str) -> list[str]:
    """The fields of one CSV line: RFC 4180 quoting, or runs of blanks for ``whitespace``."""
    if delimiter == WHITESPACE:
        return text.split()
    return next(csv.reader([text], delimiter=delimiter), [])


def _parse_csv_lines(lines: pd.Series, headers: pd.Series, delimiter: str = ",") -> pd.Series:
    """Parse CSV lines by their file's header; null when the field count differs."""
    parsed = []
    for line, header in zip(lines, headers):
        # Engines may evaluate this for rows another branch handles (a binary file has no header).
        if line is None or header is None:
            parsed.append(None)
            continue
        names, values = _csv_fields(header, delimiter), _csv_fields(line, delimiter)
        parsed.append(dict(zip(names, values)) if len(values) == len(names) else None)
    return pd.Series(parsed, dtype=object)


def _delimiter(source: dict[str, Any]) -> str:
    delimiter = source.get("delimiter") or ","
    if delimiter != WHITESPACE and len(delimiter) != 1:
        raise ValueError(
            f"{_setting(source, 'delimiter')}: expected one character (e.g. ';' or '\\t') or "
            f"'{WHITESPACE}' (runs of blanks, as in fixed-width exports), got {delimiter!r}"
        )
    return delimiter


def _parse_record(formats: set[str], delimiter: str = ",") -> Column:
    """Return the raw record as ``map<string,string>``; null when the line is malformed.

    Only the parsers of the formats present are planned: an engine may evaluate both branches
    of a ``when``, and the CSV parser is a Python UDF.
    """
    as_json = F.from_json(F.col("_raw"), "map<string,string>")
    if "csv" not in formats:
        return as_json

    def parse(lines: pd.Series, headers: pd.Series) -> pd.Series:
        return _parse_csv_lines(lines, headers, delimiter)

    # Built per call: a UDF made at import time would bind to whichever Spark flavour (classic
    # or Connect) happens to be configured then.
    as_csv = F.pandas_udf(parse, MapType(StringType(), StringType()))(F.col("_raw"), F.col("_header"))
    return as_csv if formats == {"csv"} else F.when(F.col("_format") == "csv", as_csv).otherwise(as_json)


def _originals(source: dict[str, Any]) -> dict[str, str]:
    """The source's own column name of each renamed canonical field (``known_at: {column}`` too)."""
    renamed = {canonical: original for original, canonical in (source.get("column_mapping") or {}).items()}
    policy = source.get("known_at")
    if isinstance(policy, dict) and isinstance(policy.get("column"), str):
        renamed["delivered_at"] = policy["column"]
    return renamed


def _record_values(formats: set[str], names: list[str]) -> Column:
    """The record's values of ``names`` as a struct of strings (a field the record lacks is null).

    JSON lines are parsed a second time, straight into these fields: looking them up in the parsed
    map costs several parses on Sail (measured per 1.36 M lines: 7 lookups 9.6 s, a parse 1.6 s).
    Same values as the map's: a number or nested value as its JSON text, names case-sensitive.
    """
    wanted = StructType([StructField(name, StringType()) for name in dict.fromkeys(names)])
    as_json = F.from_json(F.col("_raw"), wanted)
    if "csv" not in formats:
        return as_json
    as_csv = F.struct(*[F.col("_record")[name].alias(name) for name in wanted.names])
    return as_csv if formats == {"csv"} else F.when(F.col("_format") == "csv", as_csv).otherwise(as_json)


def _raw_values(source: dict[str, Any], fields: list[str]) -> dict[str, Column]:
    """Map each canonical field to its raw string in ``_values`` (renamed, trimmed; "" is null)."""
    renamed = _originals(source)
    return {field: F.nullif(F.trim(F.col("_values")[renamed.get(field, field)]), F.lit("")) for field in fields}


def _setting(source: dict[str, Any], key: str) -> str:
    return f"ingest.sources.{source['name']}.{key}"


def _known_at(source: dict[str, Any], event_ts: Column) -> tuple[Column | None, bool]:
    """When a record counts as known (``delivered_at``, the availability time every later stage
    uses), and whether that overrides a ``delivered_at`` the record carries: by default the
    delivery folder's day for records without one; ``{column: <name>}`` a column of the record;
    ``{event_time_plus: <duration>}`` its event time plus a lag, for a one-off export of history,
    whose folder date would make every record known at once."""
    policy = source.get("known_at") or "delivery"
    if policy == "delivery":
        return F.col("_delivery_date").cast("timestamp"), False
    if isinstance(policy, dict) and set(policy) == {"column"} and isinstance(policy["column"], str):
        return None, False  # read like any column (_originals); a record without it is quarantined
    if isinstance(policy, dict) and set(policy) == {"event_time_plus"}:
        try:
            lag = pd.Timedelta(str(policy["event_time_plus"]))
        except ValueError:
            lag = None
        if lag is not None and lag >= pd.Timedelta(0):
            return event_ts + F.expr(f"INTERVAL {int(lag.total_seconds())} SECONDS"), True
    raise ValueError(
        f"{_setting(source, 'known_at')}: expected 'delivery', {{column: <your column>}} or "
        f"{{event_time_plus: <a duration >= 0, e.g. '1 day'>}}, got {policy!r}"
    )


def _defaults(source: dict[str, Any]) -> dict[str, Column]:
    """Typed values of fields the source does not deliver (configured defaults)."""
    return {field: F.lit(value) for field, value in (source.get("defaults") or {}).items()}


def _derived_event_id(source: dict[str, Any], fields: list[str]) -> Column | None:
    """The event id of a source without one (``event_id_from``), or None to read its event_id column.

    ``{hash: [fields]}``: records equal in those (typed) fields are one event, so a redelivery is a
    duplicate, but two real events equal in them are one too and a changed value is a new event.
    ``line_in_file``: each line of a delivered file is one event (identical lines of one file are
    told apart by occurrence), so re-reading a file changes nothing, but the same record in
    another file is another event and a corrected file adds its changed lines as new events.
    """
    how = source.get("event_id_from") or "column"
    if how == "column":
        return None
    if how == "line_in_file":
        line = F.sha2(F.concat_ws("\n", F.col("_batch_id"), F.col("_raw")), 256)
        occurrence = F.row_number().over(Window.partitionBy("_batch_id", "_raw").orderBy("_raw"))
        return F.concat(F.substring(line, 1, 32), F.lit("-"), occurrence.cast("string"))
    chosen = how.get("hash") if isinstance(how, dict) and set(how) == {"hash"} else None
    if not isinstance(chosen, list) or not chosen or not set(chosen) <= set(fields) - {"event_id", "delivered_at"}:
        raise ValueError(
            f"{_setting(source, 'event_id_from')}: expected 'column', 'line_in_file' or {{hash: [<canonical "
            f"fields>]}} with fields among {sorted(set(fields) - {'event_id', 'delivered_at'})}, got {how!r}"
        )
    return F.substring(F.sha2(json_text(F.struct(*[F.col(f) for f in chosen])), 256), 1, 32)


def _typed(raw: Column, kind: str, source: dict[str, Any]) -> Column:
    """Convert a raw string to the canonical type; null when it does not parse."""
    if kind == "string":
        return raw
    if kind != "timestamp":
        return raw.try_cast(kind)
    fmt = source.get("timestamp_format")
    parsed = F.try_to_timestamp(raw, F.lit(fmt)) if fmt else F.try_to_timestamp(raw)
    zone = source.get("timezone") or "UTC"
    return parsed if zone == "UTC" else F.to_utc_timestamp(parsed, zone)


def type_records(bronze: DataFrame, source: dict[str, Any]) -> DataFrame:
    """Parse, rename and type bronze rows; add ``_failed_checks`` from the source's schema."""
    schema = SCHEMAS[source.get("schema", source["name"])]
    fields = canonical_columns(schema)
    known = {**{f: f for f in fields}, **{original: canonical for canonical, original in _originals(source).items()}}
    if "_decode_error" not in bronze.columns:  # bronze written before the column existed
        bronze = bronze.withColumn("_decode_error", F.lit(None).cast("string"))
    formats = {row["_format"] for row in bronze.select("_format").distinct().collect()}
    # Pull every raw value out of the parsed record once: each later reference to
    # ``_record[...]`` would otherwise parse the line again (measured: ~2 s per reference per
    # 1.4 M lines on Sail).
    # An undecodable line holds escaped bytes: it is quarantined for its encoding, never parsed.
    record = F.when(F.col("_decode_error").isNull(), _parse_record(formats, _delimiter(source)))
    renamed = _originals(source)
    # A malformed record has no values (the JSON struct parse would read a truncated line's fields).
    values = F.when(F.col("_record").isNotNull(), _record_values(formats, [renamed.get(f, f) for f in fields]))
    extracted = (
        bronze.withColumn("_record", record)
        .withColumn("_values", values)
        .select(
            *bronze.columns,
            F.col("_record").isNull().alias("_malformed"),
            F.filter(F.map_keys("_record"), lambda key: ~key.isin(list(known))).alias("_unexpected_columns"),
            *[value.alias(f"_raw_{field}") for field, value in _raw_values(source, fields).items()],
        )
    )
    raw = {field: F.col(f"_raw_{field}") for field in fields}
    known_at, overrides = _known_at(source, _typed(raw["event_ts"], "timestamp", source))
    defaults = {**({"delivered_at": known_at} if known_at is not None and not overrides else {}), **_defaults(source)}
    derived_id = _derived_event_id(source, fields)
    typed_columns = []
    for field in fields:
        typed = _typed(raw[field], spark_type(schema.columns[field]), source)
        if field in defaults:
            default = defaults[field].cast(spark_type(schema.columns[field]))
            typed = F.when(raw[field].isNull(), default).otherwise(typed)
            # A defaulted field is never "missing"; the raw value stands for the default.
            raw[field] = F.coalesce(raw[field], defaults[field].cast("string"))
        typed_columns.append(typed.alias(field))
    typed = extracted.select("*", *typed_columns)
    if overrides:
        typed = typed.withColumn("delivered_at", known_at)
        raw["delivered_at"] = F.col("delivered_at").cast("string")
    if derived_id is not None:
        # Derived from the typed values, so "11.77" and "11.770" name the same event.
        typed = typed.withColumn("event_id", derived_id)
        raw["event_id"] = F.col("event_id")
    malformed = (
        F.when(
            F.col("_decode_error").isNotNull(),
            F.array(F.concat(F.lit("_raw: expected text, got "), F.col("_decode_error"))),
        )
        .when(
            F.col("_malformed"),
            F.array(F.concat(F.lit("_raw: expected a valid "), F.upper("_format"), F.lit(" record"))),
        )
        .otherwise(spark_failures(schema, raw))
    )
    return typed.select(*bronze.columns, *fields, "_unexpected_columns", malformed.alias("_failed_checks"))


def type_batch(bronze: DataFrame, batch_ids: list[str], source: dict[str, Any]) -> DataFrame:
    """Type this run's bronze rows and attach their failed checks (materialised once, to Delta)."""
    batch = bronze.filter(F.col("_batch_id").isin(batch_ids)) if batch_ids else bronze.limit(0)
    typed = type_records(batch, source)
    # Only a quarantined row needs its raw line again (bronze keeps them all): the rest would make
    # the work table about twice as big to write and read.
    return typed.withColumn("_raw", F.when(F.size("_failed_checks") > 0, F.col("_raw"))).drop("_header")


# ---------------------------------------------------------------- typed records → silver


def _record_hash(fields: list[str]) -> Column:
    """Hash of a record's content (not its delivery), to tell duplicates from corrections."""
    content = [f for f in fields if f != "delivered_at"]
    return F.sha2(json_text(F.struct(*[F.col(f) for f in content])), 256)


def classify_records(typed: DataFrame, silver_current: DataFrame, fields: list[str]) -> DataFrame:
    """Label each valid row inserted/updated/duplicate and mark the version to upsert per event_id.

    Rows are ordered per event_id by delivery (the current silver row first): a row equal to its
    predecessor is a duplicate, a different one an update, one without predecessor an insert.
    The last delivered version wins (``_upsert``) unless it equals the current silver row.
    ``_new``: the event has no row in ``silver_current`` (its upsert is an append).

    Only the event_ids delivered more than once or already in silver need that order: every other
    row is an insert and its own upsert. The window (a sort of everything it is given, in memory on
    Sail) sees only those, not the whole run.
    """
    # Event ids stand in as 64-bit hashes: the engine holds a hash table of every one of the run's
    # (classifying scale 10's sessions peaked at 1.8 GB, 2.8 GB with the ids). A collision only
    # sends rows down the ordered path, which classifies any row correctly.
    valid = typed.filter(F.size("_failed_checks") == 0).withColumn("_key", F.xxhash64("event_id"))
    in_silver = silver_current.select(F.xxhash64("event_id").alias("_key"), F.lit(True).alias("_in_silver"))
    ordered = (
        valid.groupBy("_key")
        .agg(F.count(F.lit(1)).alias("_deliveries"))
        .join(in_silver, "_key", "left")
        .filter((F.col("_deliveries") > 1) | F.col("_in_silver").isNotNull())
        .select("_key", F.lit(True).alias("_ordered"))
        .distinct()
    )
    columns = [*fields, *METADATA_COLUMNS, "_unexpected_columns"]
    # The small side first: the engine builds its hash table from the left input of these joins.
    single = (
        ordered.join(valid, "_key", "right")
        .filter(F.col("_ordered").isNull())
        .withColumn("_record_hash", _record_hash(fields))
        .select(*columns, F.lit("inserted").alias("_outcome"), F.lit(True).alias("_upsert"), F.lit(True).alias(NEW))
    )
    current = silver_current.select("event_id", F.col("_record_hash").alias("_current_hash"))
    in_order = _classify_in_order(ordered.join(valid, "_key").join(current, "event_id", "left"), fields, columns)
    return single.unionByName(in_order)


def _classify_in_order(rows: DataFrame, fields: list[str], columns: list[str]) -> DataFrame:
    """Classify rows in delivery order per event_id; each carries its silver row's
    ``_current_hash`` (null if none)."""
    rows = rows.withColumn("_record_hash", _record_hash(fields)).select(
        *columns, "_current_hash", F.lit(1).alias("_order")
    )
    # Typed nulls for the columns a silver predecessor does not carry (an untyped null column
    # in a union loses its array/map type on some engines).
    predecessors = (
        rows.select("event_id", "_current_hash")
        .filter(F.col("_current_hash").isNotNull())
        .distinct()
        .select(
            *[
                F.col(c)
                if c in ("event_id", "_current_hash")
                else F.col("_current_hash").alias(c)
                if c == "_record_hash"
                else F.lit(0).alias(c)
                if c == "_order"
                else F.lit(None).cast(rows.schema[c].dataType).alias(c)
                for c in rows.columns
            ]
        )
    )
    delivery_order = ["_order", "_delivery_date", "_source_file", "_record_hash"]
    by_event = Window.partitionBy("event_id")
    chain = (
        predecessors.unionByName(rows)
        .withColumn("_previous_hash", F.lag("_record_hash").over(by_event.orderBy(*delivery_order)))
        .withColumn(
            "_position",
            F.row_number().over(by_event.orderBy(*[F.desc(c) for c in delivery_order])),
        )
        .filter(F.col("_order") == 1)
    )
    outcome = (
        F.when(F.col("_previous_hash").isNull(), "inserted")
        .when(F.col("_previous_hash") == F.col("_record_hash"), "duplicate")
        .otherwise("updated")
    )
    upsert = (F.col("_position") == 1) & (
        F.col("_current_hash").isNull() | (F.col("_current_hash") != F.col("_record_hash"))
    )
    return chain.select(
        *columns, outcome.alias("_outcome"), upsert.alias("_upsert"), F.col("_current_hash").isNull().alias(NEW)
    )


def silver_before_batches(silver: DeltaVersions, batch_ids: list[str], source: str) -> tuple[DataFrame, int | None]:
    """Silver as it was before any earlier, interrupted attempt at these batches wrote to it.

    A run killed after its silver MERGE but before its audit row leaves the batches unaudited (so
    they are ingested again) while their rows are already in silver: classified against that
    silver they would count as duplicates of themselves. The latest version without a row of
    these batches is what the interrupted run classified against. Returns it and its version.
    """
    version = silver.version
    while version is not None:
        frame = silver.at(version)
        if not batch_ids or frame.filter(F.col("_batch_id").isin(batch_ids)).limit(1).count() == 0:
            if version != silver.version:
                logger.warning(
                    "%s: silver version %d holds rows of this run's batches from an interrupted run; "
                    "classifying against version %d, before that run wrote",
                    source,
                    silver.version,
                    version,
                )
            return frame, version
        version = version - 1 if version > 0 else None
    return silver.at(None), None


def split_batch(
    typed: DataFrame, silver: DeltaVersions, batch_ids: list[str], source: dict[str, Any], ingest: dict[str, Any]
) -> tuple[DataFrame, DataFrame]:
    """Return this run's quarantined rows and its valid rows classified against silver."""
    batch = typed.filter(F.col("_batch_id").isin(batch_ids)) if batch_ids else typed.limit(0)
    rebuild = bool(ingest.get("full_rebuild"))
    current, version = (silver.at(None), None) if rebuild else silver_before_batches(silver, batch_ids, source["name"])
    fields = canonical_columns(SCHEMAS[source.get("schema", source["name"])])
    quarantine = batch.filter(F.size("_failed_checks") > 0).select(*QUARANTINE_COLUMNS)
    classified = classify_records(batch, current, fields)
    if rebuild or version != silver.version:
        # Silver may hold events classified as new here: written by an interrupted attempt, or
        # kept by a rebuild asked for in a parameters file (which MERGEs, see the catalog). Every
        # upsert then goes through the MERGE, which finds them.
        classified = classified.withColumn(NEW, F.lit(False))
    return quarantine, classified


def _top_checks(quarantine: DataFrame, limit: int = 3) -> dict[str, str]:
    """Return per batch the most frequent failed checks, e.g. ``amount (12), event_ts (3)``."""
    counts = (
        quarantine.select("_batch_id", F.explode("_failed_checks").alias("check"))
        .withColumn("check", F.split("check", ":").getItem(0))
        .groupBy("_batch_id", "check")
        .count()
        .collect()
    )
    by_batch: dict[str, list[tuple[int, str]]] = {}
    for row in counts:
        by_batch.setdefault(row["_batch_id"], []).append((row["count"], row["check"]))
    return {
        batch: ", ".join(f"{check} ({n})" for n, check in sorted(items, reverse=True)[:limit])
        for batch, items in by_batch.items()
    }


def build_audit(bronze: DataFrame, batch_ids: list[str], classified: DataFrame, quarantine: DataFrame) -> pd.DataFrame:
    """Reconcile each batch: bronze rows = inserted + updated + duplicate + quarantined."""
    columns = [c.split()[0] for c in AUDIT_SCHEMA.split(", ")]
    if not batch_ids:
        return pd.DataFrame(columns=columns)
    batch = bronze.filter(F.col("_batch_id").isin(batch_ids))
    counted = (
        batch.groupBy("_batch_id", "_source", "_delivery_date", "_source_file")
        .agg(F.count(F.lit(1)).alias("bronze_rows"))
        .toPandas()
        .rename(
            columns={
                "_batch_id": "batch_id",
                "_source": "source",
                "_delivery_date": "delivery_date",
                "_source_file": "source_file",
            }
        )
    )
    # A delivered file without a single record still gets its audit row (0 = 0 + 0 + 0 + 0): the
    # audit is the processed-delivery log, and an unlisted file would be read on every run.
    empty = sorted(set(batch_ids) - set(counted["batch_id"]))
    if empty:
        counted = pd.concat(
            [
                counted,
                pd.DataFrame(
                    {
                        "batch_id": empty,
                        "source": [b.split("/", 1)[0] for b in empty],
                        "delivery_date": [pd.Timestamp(_delivery_date(b.split("/", 1)[1])).date() for b in empty],
                        "source_file": None,
                        "bronze_rows": 0,
                    }
                ),
            ],
            ignore_index=True,
        )
    tallies = (
        classified.select("_batch_id", "_outcome")
        .unionByName(quarantine.select("_batch_id", F.lit("quarantined").alias("_outcome")))
        .groupBy("_batch_id")
        .pivot("_outcome", list(OUTCOMES))
        .count()
        .toPandas()
        .rename(columns={"_batch_id": "batch_id"})
    )
    unexpected = {
        row["_batch_id"]: ", ".join(sorted(row["cols"]))
        for row in classified.select("_batch_id", F.explode("_unexpected_columns").alias("c"))
        .groupBy("_batch_id")
        .agg(F.collect_set("c").alias("cols"))
        .collect()
    }
    audit = counted.merge(tallies, on="batch_id", how="left")
    for outcome in OUTCOMES:
        audit[outcome] = audit.get(outcome, pd.Series(0, index=audit.index)).fillna(0).astype("int64")
    audit["balanced"] = audit["bronze_rows"] == audit[list(OUTCOMES)].sum(axis=1)
    # An empty file quarantined nothing of nothing: rate 0, not NaN.
    audit["quarantine_rate"] = (audit["quarantined"] / audit["bronze_rows"].where(audit["bronze_rows"] > 0)).fillna(0.0)
    top = _top_checks(quarantine)
    audit["top_failed_checks"] = audit["batch_id"].map(top).fillna("")
    audit["unexpected_columns"] = audit["batch_id"].map(unexpected).fillna("")
    return audit[columns].sort_values("batch_id").reset_index(drop=True)


def check_audit(audit: pd.DataFrame, gate: dict[str, Any]) -> None:
    """Fail on unbalanced batches or a quarantine rate above the configured maximum."""
    unbalanced = audit[~audit["balanced"]]
    if not unbalanced.empty:
        raise RuntimeError(
            "ingest reconciliation failed (bronze rows != inserted + updated + duplicate + "
            f"quarantined) for batches: {', '.join(unbalanced['batch_id'])}"
        )
    judged = audit[audit["bronze_rows"] >= gate.get("min_rows", 0)]
    over = judged[judged["quarantine_rate"] > gate["max_rate"]]
    if not over.empty:
        lines = [
            f"  {row.batch_id}: {row.quarantined}/{row.bronze_rows} quarantined "
            f"({row.quarantine_rate:.1%}); top failing checks: {row.top_failed_checks}"
            for row in over.itertuples()
        ]
        raise QuarantineRateExceeded(
            f"quarantine rate above the maximum {gate['max_rate']:.1%} (ingest.quarantine_gate) "
            "in:\n" + "\n".join(lines) + "\nThe rejected rows are in the quarantine table with "
            "their raw payload and failed checks; the batches were not merged into silver."
        )


def reconcile_to_silver(
    classified: DataFrame,
    quarantine: DataFrame,
    bronze: DataFrame,
    batch_ids: list[str],
    source: dict[str, Any],
    ingest: dict[str, Any],
) -> tuple[DataFrame, DataFrame, pd.DataFrame]:
    """Audit each batch, gate on quarantine rate; return silver upserts and the audit.

    Outputs are saved in order: silver MERGE first, then the audit row that marks the batch as
    ingested, so a failure leaves the batch to be ingested again (every write is idempotent, and
    the next run classifies against silver as it was before the failed run wrote to it).
    """
    fields = canonical_columns(SCHEMAS[source.get("schema", source["name"])])
    classified = classified.filter(F.col("_batch_id").isin(batch_ids)) if batch_ids else classified.limit(0)
    quarantine = quarantine.filter(F.col("_batch_id").isin(batch_ids)) if batch_ids else quarantine.limit(0)
    audit = build_audit(bronze, batch_ids, classified, quarantine)
    check_audit(audit, ingest["quarantine_gate"])
    _log_audit(source["name"], audit)
    upserts = classified.filter("_upsert")
    spark = classified.sparkSession
    audit_frame = spark.createDataFrame(audit if len(audit) else [], AUDIT_SCHEMA)
    # A work table written before ``_new`` existed (kept while its source has no new delivery).
    new = F.col(NEW) if NEW in classified.columns else F.lit(False).alias(NEW)
    return upserts.select(*fields, *METADATA_COLUMNS, new), audit_frame, audit


def _log_audit(source: str, audit: pd.DataFrame) -> None:
    """Log one reconciliation line for the source and warn about unexpected columns."""
    if audit.empty:
        logger.info("%s: no new deliveries", source)
        return
    totals = audit[["bronze_rows", *OUTCOMES]].sum()
    logger.info(
        "%s: %d batches, bronze %d = inserted %d + updated %d + duplicate %d + quarantined %d",
        source,
        len(audit),
        *(int(totals[c]) for c in ["bronze_rows", *OUTCOMES]),
    )
    for row in audit[audit["unexpected_columns"] != ""].itertuples():
        logger.warning(
            "%s: unexpected columns %s (kept in bronze _raw, not in silver)",
            row.batch_id,
            row.unexpected_columns,
        )


# ---------------------------------------------------------------- silver → gold


def _daily(events: DataFrame, dates: DataFrame, aggregates: list[Column], name: str) -> DataFrame:
    """Aggregate one source's events per customer and activity day, for the given days only.

    Also keeps the latest delivery time of the day's events: what was known when (features use
    it as their availability time).
    """
    return (
        events.withColumn("activity_date", F.to_date("event_ts"))
        .join(dates, "activity_date", "left_semi")
        .groupBy("customer_id", "activity_date")
        .agg(*aggregates, F.max("delivered_at").alias(f"_{name}_delivered_at"))
    )


def upserted_rows(before: DataFrame, after: DataFrame) -> DataFrame:
    """Silver's ``event_ts`` of the rows that differ between two versions, when every commit
    between them was an append or an upsert.

    Each row of ``after`` is then either as it was in ``before`` or written since, and a row
    written since carries a landing (``_batch_id`` and ``_ingested_at``) that no row of ``before``
    has: a retried batch lands again, at another time. Besides those, only the rows they replaced
    differ: the rows of ``before`` with their event ids. Both are found by scans and a join on
    the delivery's event ids, never by comparing every row of the two versions (which held the
    whole table in memory).
    """
    # Landing times as microseconds: compared in the engine, never through a Python time zone.
    landing = F.concat_ws("@", F.col("_batch_id"), F.unix_micros("_ingested_at").cast("string"))
    held = [row["_landing"] for row in before.select(landing.alias("_landing")).distinct().collect()]
    written = after.filter(~landing.isin(held)) if held else after
    # Event ids as 64-bit hashes keep the join's table small; a collision adds a row whose days
    # are recomputed for nothing, never one left out. The delivery's keys are the left input,
    # the side the engine holds in memory.
    keys = written.select(F.xxhash64("event_id").alias("_key")).distinct()
    replaced = keys.join(before.select(F.xxhash64("event_id").alias("_key"), "event_ts"), "_key").select("event_ts")
    return written.select("event_ts").unionByName(replaced)


def gold_changed_days(silver: dict[str, DeltaVersions], reflected: dict[str, int], full_rebuild: bool) -> DataFrame:
    """The activity days whose silver events differ from the silver versions gold reflects.

    Events inserted, corrected (both their old and new day) or removed since the recorded
    version count; a source gold has never reflected (or a rebuild) counts whole.
    """
    days: set = set()
    for name, versions in silver.items():
        since = None if full_rebuild else reflected.get(name)
        if since is not None and since == versions.version:
            continue
        if since is None:
            # Counted whole: a diff against nothing would be a distinct of every silver row.
            changed = versions.current
        elif versions.only_upserts_since(since):
            # Silver's own writes: the rows written since and those they replaced.
            changed = upserted_rows(versions.at(since), versions.current)
        else:
            # A rebuild or a change by hand since: the two versions compared row by row.
            changed = changed_rows(versions.at(since), versions.current, SILVER_CHANGE_COLUMNS)
        days |= {row["d"] for row in changed.select(F.to_date("event_ts").alias("d")).distinct().collect()}
    spark = next(iter(silver.values())).current.sparkSession
    # Collected once (a few hundred days at most): the frame is used by several writes' actions.
    return spark.createDataFrame([(d,) for d in sorted(d for d in days if d is not None)], "activity_date date")


def build_daily_activity(
    orders: DeltaVersions,
    sessions: DeltaVersions,
    tickets: DeltaVersions,
    gold_table: DeltaVersions,
    gold: dict[str, Any],
    ingest: dict[str, Any],
) -> tuple[DataFrame, dict[str, Any]]:
    """Recompute one row per customer per active day for every day whose events changed.

    Returns the rows that replace those of the changed days (with a delete marker per changed
    day, ``_deleted``) and the table properties recording the silver versions gold now reflects. Gold's
    scope comes from those recorded versions, not from this run's ingest: a run killed after
    silver's commit but before gold's is repaired by the next run, whatever it ingests.
    """
    silver = {"orders": orders, "sessions": sessions, "tickets": tickets}
    full_rebuild = bool(ingest.get("full_rebuild"))
    reflected = json.loads(gold_table.properties.get(GOLD_SOURCE_VERSIONS, "{}"))
    dates = gold_changed_days(silver, reflected, full_rebuild)
    fx = F.create_map(*[x for pair in gold["fx_to_eur"].items() for x in (F.lit(pair[0]), F.lit(float(pair[1])))])
    per_source = [
        _daily(
            orders.current.withColumn("_fx", fx[F.col("currency")]),
            dates,
            [
                F.count(F.lit(1)).alias("orders"),
                F.sum("items").alias("items"),
                rounded(F.sum(F.col("amount") * F.col("_fx")), 2).alias("gross_amount_eur"),
                rounded(F.sum((F.col("amount") - F.col("discount")) * F.col("_fx")), 2).alias("net_amount_eur"),
            ],
            "orders",
        ),
        _daily(
            sessions.current,
            dates,
            [
                F.count(F.lit(1)).alias("sessions"),
                F.sum("duration_s").alias("session_seconds"),
                F.sum("pages").alias("pages"),
            ],
            "sessions",
        ),
        _daily(
            tickets.current,
            dates,
            [
                F.count(F.lit(1)).alias("tickets"),
                F.sum((F.col("severity") == "high").cast("int")).alias("high_severity_tickets"),
            ],
            "tickets",
        ),
    ]
    joined = reduce(lambda a, b: a.join(b, GOLD_KEYS, "full_outer"), per_source)
    counts = ["orders", "items", "sessions", "session_seconds", "pages", "tickets", "high_severity_tickets"]
    amounts = ["gross_amount_eur", "net_amount_eur"]
    rows = joined.select(
        *GOLD_KEYS,
        *[F.coalesce(F.col(c), F.lit(0)).cast("bigint").alias(c) for c in counts],
        *[F.coalesce(F.col(c), F.lit(0.0)).cast("double").alias(c) for c in amounts],
        F.greatest(*[F.col(f"_{name}_delivered_at") for name in ("orders", "sessions", "tickets")]).alias(
            "last_delivered_at"
        ),
        # When this row was (re)computed (lineage; features scope on gold's versions, not on this).
        F.current_timestamp().alias("_updated_at"),
    )
    stamp = {
        "properties": {
            GOLD_SOURCE_VERSIONS: json.dumps({name: v.version for name, v in silver.items()}, sort_keys=True)
        }
    }
    # A marker per changed day, so a day left without events is emptied too. Even on a rebuild:
    # the dataset overwrites only when the run says so, and a rebuild asked for in a parameters
    # file still replaces day by day.
    markers = dates.withColumn(DELETED, F.lit(True))
    return rows.withColumn(DELETED, F.lit(False)).unionByName(markers, allowMissingColumns=True), stamp


def report_ingest(*audits: pd.DataFrame) -> pd.DataFrame:
    """Log this run's reconciliation per source and one total line; return it per source."""
    frames = [audit for audit in audits if not audit.empty]
    columns = ["source", "batches", "bronze_rows", *OUTCOMES]
    if not frames:
        logger.info("ingest: nothing new to ingest (0 batches)")
        return pd.DataFrame(columns=columns)
    audit = pd.concat(frames, ignore_index=True)
    summary = (
        audit.groupby("source")
        .agg(batches=("batch_id", "count"), bronze_rows=("bronze_rows", "sum"), **{o: (o, "sum") for o in OUTCOMES})
        .reset_index()[columns]
    )
    totals = summary[columns[1:]].sum()
    logger.info(
        "ingest: %d sources, %d batches: bronze %d = inserted %d + updated %d + duplicate %d + quarantined %d",
        len(summary),
        *(int(totals[c]) for c in columns[1:]),
    )
    return summary
