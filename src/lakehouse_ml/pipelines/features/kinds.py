"""How a feature table's rows are computed from its source, per ``kind`` of its contract.

Each kind turns a refresh plan into the rows of its scope plus a delete marker for every existing
row of the scope that no longer exists, so an incremental run, a backfill and a full rebuild leave
exactly the rows a full recomputation produces (tested):

- ``daily_windows``: trailing windows of whole days over a daily table (``activity_date``,
  ``last_delivered_at``, one row per entity and day); the scope is a range of feature days;
- ``changes``: one row per change of an entity's silver rows, valid from its ``event_ts`` (the
  latest delivery wins); the scope is the entities whose silver rows changed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from lakehouse_ml.datasets.delta_versions import DeltaVersions
from lakehouse_ml.features.contracts import FeatureContract, FeatureSpec
from lakehouse_ml.features.expressions_spark import rounded
from lakehouse_ml.lakehouse import changed_rows, with_deletes

# What tells two versions of an entity's silver rows apart (generic silver columns).
CHANGE_COLUMNS = ["event_id", "event_ts", "delivered_at", "_record_hash"]


def _with_deletes(rows: DataFrame, existing_in_scope: DataFrame | None, contract: FeatureContract) -> DataFrame:
    """Recomputed rows plus a delete marker for every row of the scope that no longer exists."""
    return with_deletes(rows, existing_in_scope, [*contract.entity_keys, contract.timestamp_key])


# ---------------------------------------------------------------- daily_windows


def _day_window(contract: FeatureContract, days: int) -> Window:
    """Trailing window of ``days`` whole days on a dense daily series, the current day included."""
    return Window.partitionBy(*contract.entity_keys).orderBy("activity_date").rowsBetween(-(days - 1), 0)


def _window_feature(spec: FeatureSpec, contract: FeatureContract) -> Column:
    """A trailing-window feature from its contract: ``sum`` (optionally scaled) or ``days_since``."""
    compute, window = spec.compute, _day_window(contract, spec.window.days)
    if "sum" in compute:
        total = F.sum(F.col(compute["sum"])).over(window)
        scaled = total / F.lit(float(compute["divide_by"])) if "divide_by" in compute else total
        # A sliding sum of doubles can drift to -1e-15 where the exact answer is 0.
        return rounded(scaled.cast("double"), 6)
    last_day = F.last(F.when(F.col(compute["days_since"]) > 0, F.col("activity_date")), ignorenulls=True)
    return F.datediff(F.col("activity_date"), last_day.over(window)).cast("int")


def _days(spark: Any, start: date, end: date) -> DataFrame:
    """One row per day from ``start`` to ``end`` inclusive."""
    return spark.sql(f"SELECT explode(sequence(DATE'{start}', DATE'{end}')) AS activity_date")


def compute_window_features(daily: DataFrame, start: date, end: date, contract: FeatureContract) -> DataFrame:
    """Trailing-window features for feature days ``start..end`` from a daily table.

    Windows run over a dense daily series per entity, so "the last 7 days" is exactly 7 rows.
    An entity has a row on day D while the longest window holds at least one active day (a
    day with a source row), so no row has all-zero windows; feature_ts is the end of D
    (D+1 00:00 UTC, when the day is complete) and ingested_at the latest delivery among the days
    of the longest window (when the row's value became known).
    """
    keys = list(contract.entity_keys)
    windowed = [spec for spec in contract.features if "ratio" not in spec.compute]
    longest = max(spec.window.days for spec in windowed)
    low = start - timedelta(days=longest - 1)
    metrics = sorted({spec.compute.get("sum") or spec.compute["days_since"] for spec in windowed})
    activity = daily.filter(F.col("activity_date").between(F.lit(low), F.lit(end)))
    grid = (
        activity.select(*keys)
        .distinct()
        .crossJoin(_days(daily.sparkSession, low, end))
        .join(
            activity.select(*keys, "activity_date", "last_delivered_at", *metrics, F.lit(1).alias("_active")),
            [*keys, "activity_date"],
            "left",
        )
        .fillna(0, subset=[*metrics, "_active"])
    )
    # Presence counts active days (an integer), not the metrics themselves: a sliding sum of
    # amounts leaves a residue like 1e-13 after the window empties, which made all-zero rows
    # with a null ingested_at appear, differently in incremental and full refreshes.
    presence = F.sum("_active").over(_day_window(contract, longest))
    rows = grid.select(
        *keys,
        "activity_date",
        *[_window_feature(spec, contract).alias(spec.name) for spec in windowed],
        F.max("last_delivered_at").over(_day_window(contract, longest)).alias(contract.ingested_at_key),
        presence.alias("_presence"),
    ).filter(F.col("activity_date").between(F.lit(start), F.lit(end)) & (F.col("_presence") > 0))
    for spec in contract.features:
        if "ratio" in spec.compute:
            numerator, denominator = spec.compute["ratio"]
            ratio = F.when(F.col(denominator) != 0, F.col(numerator) / F.col(denominator))
            rows = rows.withColumn(spec.name, ratio.cast("double"))
    return rows.select(
        *keys,
        F.to_timestamp(F.date_add("activity_date", 1)).alias(contract.timestamp_key),
        contract.ingested_at_key,
        *contract.feature_names,
    )


def _day_of(contract: FeatureContract) -> Column:
    """The feature day D of a daily row (feature_ts is the end of D)."""
    return F.to_date(F.col(contract.timestamp_key) - F.expr("INTERVAL 1 MICROSECOND"))


def daily_windows(
    source: DeltaVersions, existing: DataFrame | None, contract: FeatureContract, plan: dict[str, Any]
) -> tuple[DataFrame, dict[str, Any]]:
    """Recompute the feature days a refresh must touch: staged rows (with deletes) and the plan.

    Incrementally, that is from the first day that differs between the source version last
    reflected and the source now (inserted, changed or deleted entity-days), or the first day
    past the old end of data, to the last day of data: later windows include the changed day.
    """
    current = source.current
    needs_rows = plan["mode"] in ("full", "incremental", "backfill")
    data_end = current.agg(F.max("activity_date")).collect()[0][0] if needs_rows else None
    if plan["mode"] in ("full", "incremental"):
        if plan["mode"] == "full":
            changed, old_end = current, None
        else:
            before = source.at(plan["since_version"])
            content = [c for c in current.columns if c != "_updated_at"]
            changed = changed_rows(before, current, content)
            old_end = before.agg(F.max("activity_date")).collect()[0][0]
        first, last = changed.agg(F.min("activity_date"), F.max("activity_date")).collect()[0]
        if first is not None and old_end is not None and data_end is not None and data_end > old_end:
            # Days past the old end of data are new for every entity whose windows reach them,
            # changed or not.
            first = min(first, old_end + timedelta(days=1))
        # The scope reaches the old end of data too: when data shrinks, rows past its new end go.
        ends = [d for d in (last, data_end, old_end) if d is not None]
        plan["start"], plan["end"] = first, max(ends) if first else None
    if plan["start"] is None:
        empty = compute_window_features(current, date(1970, 1, 1), date(1970, 1, 1), contract).limit(0)
        return _with_deletes(empty, None, contract), {**plan, "mode": "none"}
    # Rows exist only up to the last day of data (a backfill or the scope may reach past it).
    compute_end = min(plan["end"], data_end) if data_end is not None else None
    if compute_end is not None and compute_end >= plan["start"]:
        rows = compute_window_features(current, plan["start"], compute_end, contract)
    else:
        rows = compute_window_features(current, plan["start"], plan["start"], contract).limit(0)
    if existing is None:
        in_scope = None
    elif plan["mode"] == "full":
        in_scope = existing
    else:
        in_scope = existing.filter(_day_of(contract).between(F.lit(plan["start"]), F.lit(plan["end"])))
    return _with_deletes(rows, in_scope, contract), plan


# ---------------------------------------------------------------- changes


def compute_change_features(silver: DataFrame, contract: FeatureContract) -> DataFrame:
    """One row per change of an entity, valid from its event time; the latest delivery wins."""
    keys = list(contract.entity_keys)
    latest = Window.partitionBy(*keys, "event_ts").orderBy(F.desc("delivered_at"), F.desc("event_id"))
    return (
        silver.withColumn("_rank", F.row_number().over(latest))
        .filter(F.col("_rank") == 1)
        .select(
            *keys,
            F.col("event_ts").alias(contract.timestamp_key),
            F.col("delivered_at").alias(contract.ingested_at_key),
            *[F.col(spec.compute["column"]).alias(spec.name) for spec in contract.features],
        )
    )


def changes(
    source: DeltaVersions, existing: DataFrame | None, contract: FeatureContract, plan: dict[str, Any]
) -> tuple[DataFrame, dict[str, Any]]:
    """Recompute the entities whose silver rows changed since the version last reflected (or a
    backfill's days, or everything): staged rows (with deletes) and the plan."""
    keys = list(contract.entity_keys)
    current = source.current
    rows = compute_change_features(current, contract)
    if plan["mode"] == "none":
        return _with_deletes(rows.limit(0), None, contract), plan
    in_scope = existing
    if plan["mode"] == "backfill":
        window = F.to_date(contract.timestamp_key).between(F.lit(plan["start"]), F.lit(plan["end"]))
        rows = rows.filter(window)
        in_scope = None if existing is None else existing.filter(window)
    elif plan["mode"] == "incremental":
        changed = changed_rows(source.at(plan["since_version"]), current, [*keys, *CHANGE_COLUMNS])
        changed = changed.select(*keys).distinct()
        rows = compute_change_features(current.join(changed, keys, "left_semi"), contract)
        in_scope = None if existing is None else existing.join(changed, keys, "left_semi")
    return _with_deletes(rows, in_scope, contract), plan


# The columns each kind reads from its source besides the entity keys and the features' inputs.
SOURCE_COLUMNS = {"daily_windows": ("activity_date", "last_delivered_at"), "changes": tuple(CHANGE_COLUMNS)}


def required_columns(contract: FeatureContract) -> list[str]:
    """Every source column a table's refresh reads (its kind's, its keys, its features' inputs)."""
    inputs = [
        value
        for spec in contract.features
        for key, value in spec.compute.items()
        if key in ("sum", "days_since", "column")
    ]
    return list(dict.fromkeys([*contract.entity_keys, *SOURCE_COLUMNS[contract.kind], *inputs]))


KINDS: dict[str, Callable[..., tuple[DataFrame, dict[str, Any]]]] = {
    "daily_windows": daily_windows,
    "changes": changes,
}
