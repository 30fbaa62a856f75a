"""Point-in-time correct feature lookups: join feature tables onto a spine of (entity, time) rows.

Modelled on Databricks' ``FeatureLookup`` / ``create_training_set``::

    from lakehouse_ml.features.lookup import FeatureLookup, build_training_set

    training = build_training_set(
        spine,                                   # e.g. customer_id, cutoff_ts, label
        [
            FeatureLookup(
                source="data/04_feature/customer_daily",   # Delta path, or a Spark DataFrame
                feature_names=["orders_30d", "spend_30d"],
                lookup_key="customer_id",
                timestamp_key="feature_ts",
                lookback_window="30 days",
            ),
        ],
        entity_key="customer_id",
        timestamp_key="cutoff_ts",
    )
    # -> the spine's columns (same order, same values, same rows) + customer_daily__orders_30d, ...

The rules, for every spine row and every lookup independently:

1. a feature row matches only on equal keys (all ``lookup_key`` columns); a NULL key on either
   side never matches. The spine must hold columns named like the lookup's ``lookup_key``
   (as in Databricks); key types must be equal (integer types of different widths are widened);
2. it is eligible only if ``feature_ts <= spine timestamp`` (inclusive); NULL timestamps on
   either side are never eligible;
3. with ``lookback_window``, also ``feature_ts >= spine timestamp - lookback_window`` (inclusive);
4. with ``filter_by_ingested_at``, also ``ingested_at <= spine timestamp`` (rows not yet known
   at the cutoff are ignored; a NULL ``ingested_at`` is not eligible); without it,
   ``ingested_at`` only breaks ties;
5. the chosen row is the eligible one with the greatest ``(feature_ts, ingested_at)``, a NULL
   ``ingested_at`` lowest; its features are returned as a whole row (a NULL feature stays NULL,
   it is never filled from an older row). Rows tied on key, ``feature_ts`` *and*
   ``ingested_at`` are interchangeable: either may be returned (one whole row, never a mix);
6. no eligible row gives NULL features; every spine row appears exactly once, duplicates
   included, in the spine's order, with the spine's columns (same order, same values) followed
   by ``<prefix><feature>`` columns, lookup after lookup;
7. timestamps compare as UTC instants at microsecond precision: ``TIMESTAMP`` columns are
   instants whatever the session time zone; ``TIMESTAMP_NTZ`` columns are read as UTC wall
   clock; ``DATE`` columns mean midnight UTC at the start of that day (so a spine date sees
   the features stamped up to that midnight, nothing later that day). Other types are rejected.

How it runs: engine-native operations only (a window, joins, a sort), so the same plan runs on
the embedded engine and on a Spark cluster, and no row pairs are ever formed. Per lookup:

1. **choose**: the spine's distinct (key, time) and the eligible feature rows are unioned and
   ordered per key by availability time ``a`` (``feature_ts``; with ``filter_by_ingested_at``,
   ``max(feature_ts, ingested_at)``: a row is eligible at t exactly when ``a <= t``), feature
   rows before a spine time at the same instant. Each feature row's rank is its
   ``(feature_ts, ingested_at)`` packed into one exact decimal (NULL ``ingested_at`` lowest), so
   the best row available at a spine time is the running maximum of the rank;
2. **fetch**: the chosen row's features are joined on (key, rank); rows tied on both are
   interchangeable, so one whole row is kept per (key, time). The lookback is checked on the
   chosen row alone (if it is too old, every other eligible row is older still);
3. the spine is left-joined to each lookup's answers on (key, time) and sorted by a row id
   taken in that same plan, which restores the spine's order.

The answer depends only on the values read, never on how an engine numbers or orders rows: each
input may be read more than once, and only has to give the same rows each time.

Cost: one sort of the spine's (key, time) and the feature rows per lookup, two joins and the
final sort (``tests/benchmarks/bench_point_in_time.py``).

Limits: feature times must lie within ±2**62 microseconds of 1970 (±146,000 years; Spark's own
timestamps span years 1-9999), and a lookback of 2**62 microseconds or more is no limit. Key
columns of complex types are refused; floating-point keys match by value (-0.0 = 0.0, NaN = NaN,
as in Spark joins). Spine columns may not start with ``__pit_`` (the lookup's own columns).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakehouse_ml.features.feature_lookup import FeatureLookup, FeatureLookupError, column_names, parse_lookback_window

# FeatureLookup and its error are defined without Spark (feature_lookup.py) and named here too,
# beside the builder, as Databricks' API names them together.
__all__ = [
    "FeatureLookup",
    "FeatureLookupError",
    "build_training_set",
    "eligible_at",
    "parse_lookback_window",
    "read_source",
]

_PREFIX = "__pit_"
_RID = "__pit_rid"
_T = "__pit_t"
_FT = "__pit_ft"
_ING = "__pit_ing"
_AT = "__pit_at"
_KIND = "__pit_kind"
_RANK = "__pit_rank"
_DUP = "__pit_dup"
_MICROS_PER_DAY = 86_400_000_000
_MIN_INT64 = -(2**63)
# (feature_ts, ingested_at) packed as feature_ts * 2**64 + (ingested_at + 2**63): exact in 38
# digits for feature times within ±2**62 µs (±146,000 years; Spark's own range is years 1-9999).
_PACKED = "decimal(38,0)"
# A lookback this long (146,000 years) or longer is no limit (and would overflow the check).
_UNLIMITED_US = 2**62
_INTEGRAL = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)
_TIME_TYPES = "timestamp, timestamp_ntz or date"


# --------------------------------------------------------------------------------- the builder


def read_source(lookup: FeatureLookup, spark: Any) -> DataFrame:
    """The lookup's feature table as a DataFrame (a path is read as Delta, lazily)."""
    if isinstance(lookup.source, DataFrame):
        return lookup.source
    from deltalake import DeltaTable

    from lakehouse_ml.lakehouse import table_uri

    uri = table_uri(lookup.source)
    # Local tables are checked here for a clear message; remote ones are left to the engine
    # (it holds the credentials).
    if "://" not in uri and not DeltaTable.is_deltatable(uri):
        raise FeatureLookupError(f"lookup '{lookup.label}': no Delta table at {uri} (source {lookup.source!r})")
    return spark.read.format("delta").load(uri)


def eligible_at(lookup: FeatureLookup, at: datetime) -> FeatureLookup:
    """The lookup reading only the rows it could choose for a request at ``at`` (same answer, less work).

    When every spine row has the same time (batch scoring, an online publish), rows stamped after
    it, before its lookback window or (when filtering by ingestion time) known after it are never
    eligible: dropping them before the shuffle keeps days of a daily table instead of its history.
    """
    stamped = F.col(lookup.timestamp_key)
    keep = stamped <= F.lit(at)
    if lookup.lookback_window is not None:
        keep &= stamped >= F.lit(at - lookup.lookback_window)
    if lookup.filter_by_ingested_at:
        keep &= F.col(lookup.ingested_at_key) <= F.lit(at)
    return replace(lookup, source=lookup.source.where(keep))


def _quoted(name: str) -> Column:
    return F.col("`" + name.replace("`", "``") + "`")


def _instant_micros(column: Column, data_type: T.DataType) -> Column:
    """Microseconds since the epoch (UTC) of a timestamp / timestamp_ntz / date column."""
    if isinstance(data_type, T.TimestampType):
        return F.unix_micros(column)
    if isinstance(data_type, T.TimestampNTZType):
        # An NTZ cast to TIMESTAMP would use the session zone; its text with 'Z' is UTC.
        return F.unix_micros(F.to_timestamp(F.concat(column.cast("string"), F.lit("Z"))))
    if isinstance(data_type, T.DateType):
        return F.unix_date(column).cast("bigint") * F.lit(_MICROS_PER_DAY)
    raise AssertionError(data_type)  # checked by _check_time_column


def _check_time_column(schema: T.StructType, column: str, where: str) -> T.DataType:
    data_type = schema[column].dataType
    if not isinstance(data_type, (T.TimestampType, T.TimestampNTZType, T.DateType)):
        raise FeatureLookupError(
            f"{where} column '{column}' must be of type {_TIME_TYPES}, got {data_type.simpleString()}"
        )
    return data_type


def _missing(columns: Sequence[str], schema: T.StructType, where: str, what: str) -> None:
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise FeatureLookupError(f"{where} has no column(s) {missing} ({what}); its columns are {schema.names}")


def _common_key_type(spine: T.DataType, feature: T.DataType, key: str, label: str) -> T.DataType:
    if spine == feature:
        return spine
    if isinstance(spine, _INTEGRAL) and isinstance(feature, _INTEGRAL):
        return T.LongType()
    raise FeatureLookupError(
        f"lookup '{label}': key column '{key}' is {spine.simpleString()} in the spine but "
        f"{feature.simpleString()} in the feature table; cast one side"
    )


def _key_expr(column: Column, data_type: T.DataType, target: T.DataType) -> Column:
    if data_type != target:
        column = column.cast(target)
    if isinstance(target, (T.FloatType, T.DoubleType)):
        column = F.when(column == F.lit(0.0), F.lit(0.0).cast(target)).otherwise(column)  # -0.0
    return column


def _check_request(
    spine: DataFrame, lookups: Sequence[FeatureLookup], entity_key: tuple[str, ...], timestamp_key: str
) -> None:
    schema = spine.schema
    reserved = [c for c in schema.names if c.lower().startswith(_PREFIX)]
    if reserved:
        raise FeatureLookupError(
            f"the spine has column(s) {reserved}: names starting with '{_PREFIX}' are the lookup's own; rename them"
        )
    duplicated = sorted({c for c in schema.names if [n.lower() for n in schema.names].count(c.lower()) > 1})
    if duplicated:
        raise FeatureLookupError(f"the spine has duplicate column names {duplicated}")
    _missing(entity_key, schema, "the spine", "entity_key")
    _missing([timestamp_key], schema, "the spine", "timestamp_key")
    _check_time_column(schema, timestamp_key, "the spine's timestamp_key")
    if not lookups:
        raise FeatureLookupError("build_training_set needs at least one FeatureLookup")
    not_lookups = [type(lookup).__name__ for lookup in lookups if not isinstance(lookup, FeatureLookup)]
    if not_lookups:
        raise FeatureLookupError(f"lookups must be FeatureLookup objects, got {not_lookups}")
    outputs = list(schema.names)
    for lookup in lookups:
        outputs += lookup.output_columns()
    seen: dict[str, str] = {}
    clashes = []
    for column in outputs:
        if column.lower() in seen:
            clashes.append(column)
        seen.setdefault(column.lower(), column)
    if clashes:
        raise FeatureLookupError(
            f"the training set would have duplicate column names {sorted(set(clashes))} "
            "(spine columns and '<prefix><feature>' columns); give the lookups distinct prefixes"
        )


def build_training_set(
    spine: DataFrame,
    lookups: Sequence[FeatureLookup],
    entity_key: str | list[str],
    timestamp_key: str,
) -> DataFrame:
    """Return ``spine`` with each lookup's features as of each row's ``timestamp_key``.

    See the module docstring for the rules and how it runs. ``entity_key`` names the spine's
    entity column(s): they must exist; each lookup's ``lookup_key`` must name spine columns too
    (usually the same). Lazy: the inputs' schemas are checked now, nothing runs until the result
    is written or collected.

    Raises:
        FeatureLookupError: missing columns on either side, unknown feature names, key or
            timestamp type mismatches, or duplicate output column names.
    """
    entity_keys = column_names(entity_key, "entity_key")
    if not isinstance(timestamp_key, str) or not timestamp_key:
        raise FeatureLookupError(f"timestamp_key must be a column name, got {timestamp_key!r}")
    _check_request(spine, lookups, entity_keys, timestamp_key)
    spark = spine.sparkSession
    spine_schema = spine.schema
    spine_time = _instant_micros(_quoted(timestamp_key), spine_schema[timestamp_key].dataType).alias(_T)

    # The id is taken in the plan that gives the result's rows; the answers are joined to those
    # rows by (key, time), so the other reads of the spine only need to give the same *set* of
    # (key, time): a spine whose plan numbers its rows differently on each run is still exact.
    frame = spine.select("*", F.monotonically_increasing_id().alias(_RID), spine_time)
    for index, lookup in enumerate(lookups):
        answers, keys = _answers(spine, spine_schema, spine_time, lookup, index, spark)
        frame = frame.select("*", *[key.spine.alias(key.name) for key in keys]).join(
            answers, [*[key.name for key in keys], _T], "left"
        )

    features = [
        F.col(_value_column(i, j)).alias(column)
        for i, lookup in enumerate(lookups)
        for j, column in enumerate(lookup.output_columns())
    ]
    return frame.orderBy(_RID).select(*[_quoted(c) for c in spine_schema.names], *features)


def _value_column(lookup: int, feature: int) -> str:
    return f"__pit_f{lookup}_{feature}"


@dataclass(frozen=True)
class _Key:
    """A lookup key column as both sides hold it for the join (same type, -0.0 as 0.0)."""

    name: str
    spine: Column
    feature: Column


def _answers(
    spine: DataFrame,
    spine_schema: T.StructType,
    spine_time: Column,
    lookup: FeatureLookup,
    index: int,
    spark: Any,
) -> tuple[DataFrame, list[_Key]]:
    """One lookup's features for every distinct (key, time) of the spine, and its key columns."""
    label = lookup.label
    source = read_source(lookup, spark)
    schema = source.schema
    where = f"feature table of lookup '{label}'"
    _missing(lookup.lookup_key, spine_schema, "the spine", f"lookup_key of lookup '{label}'")
    _missing(lookup.lookup_key, schema, f"the {where}", "lookup_key")
    _missing([lookup.timestamp_key], schema, f"the {where}", "timestamp_key")
    _missing(lookup.feature_names, schema, f"the {where}", "unknown feature_names")
    feature_time_type = _check_time_column(schema, lookup.timestamp_key, f"the {where}'s timestamp_key")
    if lookup.ingested_at_key is not None:
        _missing([lookup.ingested_at_key], schema, f"the {where}", "ingested_at_key")
        ingested_type = _check_time_column(schema, lookup.ingested_at_key, f"the {where}'s ingested_at_key")

    keys = []
    for position, key in enumerate(lookup.lookup_key):
        s_type, f_type = spine_schema[key].dataType, schema[key].dataType
        if isinstance(s_type, (T.StructType, T.ArrayType, T.MapType)):
            raise FeatureLookupError(f"lookup '{label}': key column '{key}' has a complex type {s_type.simpleString()}")
        target = _common_key_type(s_type, f_type, key, label)
        keys.append(
            _Key(
                name=f"__pit_l{index}_key{position}",
                spine=_key_expr(_quoted(key), s_type, target),
                feature=_key_expr(_quoted(key), f_type, target),
            )
        )
    names = [key.name for key in keys]

    feature_ts = _instant_micros(_quoted(lookup.timestamp_key), feature_time_type)
    ingested = (
        _instant_micros(_quoted(lookup.ingested_at_key), ingested_type)
        if lookup.ingested_at_key is not None
        else F.lit(None).cast("bigint")
    )
    eligible = F.lit(True)
    for key in lookup.lookup_key:
        eligible &= _quoted(key).isNotNull()
    eligible &= _quoted(lookup.timestamp_key).isNotNull()
    if lookup.filter_by_ingested_at:
        eligible &= _quoted(lookup.ingested_at_key).isNotNull()
    values = [_value_column(index, j) for j in range(len(lookup.feature_names))]
    rows = source.where(eligible).select(
        *[key.feature.alias(key.name) for key in keys],
        feature_ts.alias(_FT),
        # NULL lowest: below every instant
        F.coalesce(ingested, F.lit(_MIN_INT64)).alias(_ING),
        *[_quoted(f).alias(v) for f, v in zip(lookup.feature_names, values)],
    )
    # A NULL key or time never matches: such spine rows are left out here and get NULLs
    # (isNotNull, not dropna(), which would also drop NaN keys, and those match).
    asked = spine.select(*[key.spine.alias(key.name) for key in keys], spine_time)
    for column in [*names, _T]:
        asked = asked.where(F.col(column).isNotNull())

    # One ordered pass per key over the asked (key, time) and the feature rows together, by
    # availability time (``feature_ts``; when filtering ``max(feature_ts, ingested_at)``, since
    # both must be <= t), feature rows before a spine time at the same instant. The best row
    # available so far is the greatest (feature_ts, ingested_at): the running maximum of the pair
    # packed into one exact decimal, which with the key also names the row.
    available = F.greatest(F.col(_FT), F.col(_ING)) if lookup.filter_by_ingested_at else F.col(_FT)
    rank = F.col(_FT).cast(_PACKED) * F.lit(str(2**64)).cast(_PACKED) + (
        F.col(_ING).cast(_PACKED) - F.lit(str(_MIN_INT64)).cast(_PACKED)
    )
    spine_rows = asked.distinct().select(
        *names, F.col(_T).alias(_AT), F.lit(1).alias(_KIND), F.lit(None).cast(_PACKED).alias(_RANK)
    )
    feature_rows = rows.select(*names, available.alias(_AT), F.lit(0).alias(_KIND), rank.alias(_RANK))
    so_far = Window.partitionBy(*names).orderBy(_AT, _KIND).rowsBetween(Window.unboundedPreceding, Window.currentRow)
    chosen = (
        spine_rows.unionByName(feature_rows)
        .select(*names, _KIND, F.col(_AT).alias(_T), F.max(_RANK).over(so_far).alias(_RANK))
        .where((F.col(_KIND) == 1) & F.col(_RANK).isNotNull())
        .drop(_KIND)
    )

    # The chosen row's features, by (key, rank). Rows tied on both are interchangeable: one whole
    # row is kept per spine (key, time), the first of each run of equal times in a key's
    # partition (a window partitioned by (key, time) would pay for a partition per spine time:
    # seconds per million on Sail).
    previous = F.lag(_T).over(Window.partitionBy(*names).orderBy(_T))
    answered = (
        chosen.join(rows.select(*names, rank.alias(_RANK), _FT, *values), [*names, _RANK])
        .withColumn(_DUP, previous)
        .where(F.col(_DUP).isNull() | (F.col(_DUP) != F.col(_T)))
    )
    lookback = None if lookup.lookback_window is None else lookup.lookback_window // timedelta(microseconds=1)
    if lookback is not None and lookback < _UNLIMITED_US:
        # Only the chosen row needs the check: every other eligible row ranks below it by
        # feature_ts, so if it is too old, so are they.
        recent = F.col(_FT) >= F.col(_T) - F.lit(lookback)
        kept = [F.when(recent, F.col(v)).alias(v) for v in values]
    else:
        kept = [F.col(v) for v in values]
    return answered.select(*names, _T, *kept), keys
