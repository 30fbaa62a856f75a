"""Publish-online nodes: the latest row per customer of each served feature table, changed keys only.

Per served table (``publish_online.tables``, default every table the training set looks up),
with the training set's own ``FeatureLookup`` (features, ``filter_by_ingested_at``):

1. in Spark, the latest row per key *as of* ``publish_online.as_of`` (default: the latest
   ``ingested_at`` of the served tables): among rows stamped by then (and known by then, when the
   lookup filters by ingestion time) and within the lookback window, the greatest
   ``(feature_ts, ingested_at)``, a null ``ingested_at`` lowest — the row a point-in-time lookup
   at that time chooses — with a hash of the served columns;
2. in Spark, a full outer join with the ``(key, row hash)`` pairs the store holds: only keys
   whose latest row is new or different are collected to the driver (Arrow), and keys the store
   holds but the table no longer has are deleted.

Why row hashes rather than a Delta-side diff between the published version and now: the engine
has no Change Data Feed, a diff of two versions would scan both anyway, and the row to serve
changes without any commit when ``as_of`` moves (a row stamped later becomes current, an old one
leaves the lookback window).
Comparing against what the store actually holds also repairs a store that lost writes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from lakehouse_ml.capabilities import json_text
from lakehouse_ml.features.lookup import FeatureLookup, eligible_at
from lakehouse_ml.features.tables import feature_lookups, parsed_contracts, resolve_lookups
from lakehouse_ml.online.store import KEY_SEPARATOR, ROW_HASH, utc_from_micros
from lakehouse_ml.online.vectors import as_utc

logger = logging.getLogger(__name__)

_KEY, _PUBLISHED, _DELETED = "_key", "_published_hash", "_deleted"


def _as_of(publish: dict[str, Any], lookups: list[FeatureLookup]) -> datetime:
    """The configured publish time; ``now`` is the wall clock; null is the latest ``ingested_at``
    of the served tables (what the lakehouse knows: re-runs on unchanged tables give the same time)."""
    configured = publish.get("as_of")
    if configured == "now":
        return datetime.now(timezone.utc)
    if configured in (None, ""):
        return _latest_known(lookups)
    try:
        return as_utc(configured)
    except ValueError as error:
        raise ValueError(
            f"publish_online.as_of must be null, 'now' or a time with a zone like 2026-03-01T00:00:00Z: {error}"
        ) from None


def _latest_known(lookups: list[FeatureLookup]) -> datetime:
    """The latest ``ingested_at`` (else ``feature_ts``) over the served tables."""
    latest = []
    for lookup in lookups:
        column = _column(lookup.ingested_at_key or lookup.timestamp_key)
        micros = lookup.source.agg(F.unix_micros(F.max(column)).alias("m")).collect()[0]["m"]
        if micros is not None:
            latest.append(utc_from_micros(micros))
    if not latest:
        raise ValueError(
            "publish_online: the served feature tables hold no rows; set publish_online.as_of or run the features pipeline"
        )
    return max(latest)


def _served(lookups: dict[str, Any], tables: list[str] | None) -> dict[str, Any]:
    """The training set's lookups of the served tables."""
    if not tables:
        return dict(lookups)
    unknown = sorted(set(tables) - set(lookups))
    if unknown:
        raise ValueError(
            f"publish_online.tables: {unknown} are not tables the training set looks up ({sorted(lookups)})"
        )
    return {name: config for name, config in lookups.items() if name in tables}


def _column(name: str) -> Any:
    return F.col("`" + name.replace("`", "``") + "`")


def latest_rows(lookup: FeatureLookup, as_of: datetime) -> DataFrame:
    """Per key, the row a point-in-time lookup at ``as_of`` chooses, with ``_key`` and a hash of the
    served columns; a key whose chosen row is older than the lookback window has none (such a row
    is never used at ``as_of`` or later, and skipping old history keeps the shuffle small)."""
    stamp, known = _column(lookup.timestamp_key), _column(lookup.ingested_at_key)
    keys = [_column(k) for k in lookup.lookup_key]
    served = [*lookup.lookup_key, *lookup.feature_names]
    eligible = eligible_at(lookup, as_of).source
    for key in keys:
        eligible = eligible.where(key.isNotNull())
    hashed = eligible.select(*[_column(c) for c in served]).withColumn(
        ROW_HASH, F.substring(F.sha2(json_text(F.struct(*[_column(c) for c in served])), 256), 1, 32)
    )
    # Rows tied on (feature_ts, ingested_at) are interchangeable; the hash makes the pick stable.
    order = Window.partitionBy(*keys).orderBy(stamp.desc(), known.desc_nulls_last(), F.col(ROW_HASH).desc())
    return (
        hashed.withColumn("_rank", F.row_number().over(order))
        .where(F.col("_rank") == 1)
        .drop("_rank")
        .withColumn(_KEY, F.concat_ws(KEY_SEPARATOR, *[k.cast("string") for k in keys]))
    )


def changed_rows(latest: DataFrame, published: pd.DataFrame) -> DataFrame:
    """Latest rows that are new or differ from the store's, and (``_deleted``) keys the store
    holds that have no latest row any more."""
    spark = latest.sparkSession
    stored = spark.createDataFrame(
        published.rename(columns={ROW_HASH: _PUBLISHED})[[_KEY, _PUBLISHED]].astype(object),
        f"{_KEY} string, {_PUBLISHED} string",
    )
    joined = latest.join(stored, _KEY, "full_outer")
    current, before = F.col(ROW_HASH), F.col(_PUBLISHED)
    return joined.where(current.isNull() | before.isNull() | (current != before)).withColumn(_DELETED, current.isNull())


def _collect(changes: DataFrame) -> tuple[pd.DataFrame, list[str], int]:
    """Changed rows (Arrow types kept: an int column with nulls stays an int), deleted keys, new keys."""
    frame = changes.toArrow().to_pandas(types_mapper=pd.ArrowDtype)
    deleted = frame[_DELETED].astype(bool).to_numpy()
    new = int((frame[_PUBLISHED].isna().to_numpy() & ~deleted).sum())
    rows = frame.loc[~deleted].drop(columns=[_KEY, _PUBLISHED, _DELETED]).reset_index(drop=True)
    return rows, frame.loc[deleted, _KEY].astype(str).tolist(), new


def plan_online_publish(
    tables: Mapping[str, DataFrame],
    infos: Mapping[str, dict[str, Any]],
    published: dict[str, Any],
    feature_tables: dict[str, Any],
    training_set: dict[str, Any],
    publish_online: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The store updates (changed latest rows, deleted keys, source versions) and their counts."""
    contracts = parsed_contracts(feature_tables)
    lookups = feature_lookups(
        tables, contracts, _served(resolve_lookups(contracts, training_set), publish_online.get("tables"))
    )
    as_of = _as_of(publish_online, lookups)
    updates, counts = {}, {}
    for lookup in lookups:
        table = lookup.name
        state = published["tables"].get(table)
        hashes = state["row_hashes"] if state else pd.DataFrame({_KEY: [], ROW_HASH: []})
        rows, deleted, new = _collect(changed_rows(latest_rows(lookup, as_of), hashes))
        updates[table] = {
            "rows": rows,
            "deleted": deleted,
            "source_version": infos[table]["version"],
            "key_columns": list(lookup.lookup_key),
            "contract_hash": contracts[table].hash,
            "as_of": as_of,
        }
        counts[table] = {
            "keys": len(hashes) + new - len(deleted),
            "changed": len(rows),
            "new": new,
            "deleted": len(deleted),
            "version_before": state["source_version"] if state else None,
            "version": infos[table]["version"],
        }
    if not any(c["changed"] or c["deleted"] or c["version"] != c["version_before"] for c in counts.values()):
        logger.info(
            "publish_online: nothing changed since the last publish (as of %s): nothing to write", as_of.isoformat()
        )
    return {"tables": updates}, {"as_of": as_of.isoformat(), "tables": counts}


def report_online_publish(store: dict[str, Any], summary: dict[str, Any]) -> None:
    """One summary line: per table keys, changed, deleted and source versions, and the store."""
    parts = []
    for table, counts in summary["tables"].items():
        state = store["tables"].get(table) or {}
        before = counts["version_before"]
        versions = (
            f"v{counts['version']}" if before in (None, counts["version"]) else f"v{before} -> v{counts['version']}"
        )
        parts.append(
            f"{table} {state.get('rows', counts['keys'])} keys, {counts['changed']} changed ({counts['new']} new), "
            f"{counts['deleted']} deleted, {versions}"
        )
    written = any(c["changed"] or c["deleted"] for c in summary["tables"].values())
    logger.info(
        "publish_online: %s -> store %s as of %s%s",
        "; ".join(parts) or "no table served",
        store["store"],
        summary["as_of"],
        "" if written else " (nothing written)",
    )
