"""Feature nodes: contract-driven feature tables, refreshed incrementally and merged into Delta.

Every refresh recomputes a *scope* of a table (a range of feature days, or a set of customers),
stages the rows, validates them against the contract and publishes them with one MERGE that
upserts the recomputed rows and deletes the rows of the scope that no longer exist. So an
incremental run, a backfill and a full rebuild leave exactly the rows a full recomputation
produces (tested).
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pandas as pd
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from lakehouse_ml.datasets.delta_versions import DeltaVersions
from lakehouse_ml.features.contracts import FeatureContract, FeatureSpec, parse_contract
from lakehouse_ml.features.validation import check_contract, enforce, feature_summaries, summary_metrics
from lakehouse_ml.lakehouse import DELETED, changed_rows, with_deletes

logger = logging.getLogger(__name__)

REFRESH_ID = "_refresh_id"
# What tells two versions of a customer's silver profile rows apart.
PROFILE_CHANGE_COLUMNS = ["customer_id", "event_id", "event_ts", "delivered_at", "_record_hash"]
REFRESH_SCHEMA = (
    "table string, refresh_id string, mode string, scope string, rows_upserted bigint, "
    "rows_deleted bigint, version_before bigint, version_after bigint, contract_hash string, "
    "source_version bigint, refreshed_at timestamp"
)
SUMMARY_SCHEMA = (
    "table string, version bigint, contract_hash string, refresh_id string, feature string, "
    "rows bigint, nulls bigint, null_rate double, distinct bigint, min string, max string, "
    "mean double, p01 double, p25 double, p50 double, p75 double, p99 double, top_values string"
)


# ---------------------------------------------------------------- planning


def _previous(refreshes: DataFrame, table: str) -> dict[str, Any]:
    """The last recorded refresh of ``table`` (source version reflected, table version), or an empty dict."""
    rows = refreshes.filter(F.col("table") == table).orderBy(F.desc("refreshed_at")).limit(1).collect()
    return rows[0].asDict() if rows else {}


def _backfill_range(features: dict[str, Any], table: str) -> tuple[date, date] | None:
    """The configured backfill range for ``table`` (``features.backfill``), if any."""
    backfill = features.get("backfill") or {}
    if not backfill.get("start"):
        return None
    if backfill.get("tables") and table not in backfill["tables"]:
        return None
    start, end = (pd.Timestamp(str(backfill[k])).date() for k in ("start", "end"))
    if end < start:
        raise ValueError(f"features.backfill: end {end} is before start {start}")
    return start, end


def plan_refresh(
    source: DeltaVersions, refreshes: DataFrame, contract: FeatureContract, features: dict[str, Any]
) -> dict[str, Any]:
    """Decide what to recompute: a backfill range, everything, or what changed in the source since
    the source version the table last reflected (``source_version`` of its last refresh)."""
    refreshed_at = datetime.now(timezone.utc)
    previous = _previous(refreshes, contract.table)
    plan = {
        "table": contract.table,
        "refresh_id": f"{contract.table}@{refreshed_at.isoformat()}",
        "refreshed_at": refreshed_at,
        "source_version": source.version,
        "since_version": previous.get("source_version"),
        "version_before": previous.get("version_after"),
        "start": None,
        "end": None,
    }
    backfill = _backfill_range(features, contract.table)
    if not contract.enabled:
        return {**plan, "mode": "disabled"}
    if backfill:
        # A range only: the rest of the table still reflects the version it did before.
        return {**plan, "mode": "backfill", "start": backfill[0], "end": backfill[1], "source_version": plan["since_version"]}
    if features.get("full_rebuild") or plan["since_version"] is None:
        return {**plan, "mode": "full"}
    if source.version == plan["since_version"]:
        return {**plan, "mode": "none"}
    return {**plan, "mode": "incremental"}


def _scope_label(plan: dict[str, Any]) -> str:
    """Human-readable scope of a refresh for the audit table."""
    if plan["start"] is not None:
        return f"feature days {plan['start']}..{plan['end']}"
    if plan["mode"] == "incremental":
        return f"source changes in versions {plan['since_version']}..{plan['source_version']}"
    return plan["mode"]


# ---------------------------------------------------------------- computation


def _day_window(days: int) -> Window:
    """Trailing window of ``days`` whole days on a dense daily series, the current day included."""
    return Window.partitionBy("customer_id").orderBy("activity_date").rowsBetween(-(days - 1), 0)


def _window_feature(spec: FeatureSpec) -> Column:
    """A trailing-window feature from its contract: ``sum`` (optionally scaled) or ``days_since``."""
    compute, window = spec.compute, _day_window(spec.window.days)
    if "sum" in compute:
        total = F.sum(F.col(compute["sum"])).over(window)
        scaled = total / F.lit(float(compute["divide_by"])) if "divide_by" in compute else total
        # A sliding sum of doubles can drift to -1e-15 where the exact answer is 0.
        return F.round(scaled.cast("double"), 6)
    if "days_since" in compute:
        last_day = F.last(F.when(F.col(compute["days_since"]) > 0, F.col("activity_date")), ignorenulls=True)
        return F.datediff(F.col("activity_date"), last_day.over(window)).cast("int")
    raise ValueError(f"{spec.name}: unknown compute {compute}; expected sum, days_since or ratio")


def _days(spark: Any, start: date, end: date) -> DataFrame:
    """One row per day from ``start`` to ``end`` inclusive."""
    return spark.sql(f"SELECT explode(sequence(DATE'{start}', DATE'{end}')) AS activity_date")


def compute_activity_features(gold: DataFrame, start: date, end: date, contract: FeatureContract) -> DataFrame:
    """Trailing-window features for feature days ``start..end`` from daily activity.

    Windows run over a dense daily series per customer, so "the last 7 days" is exactly 7 rows.
    A customer has a row on day D while the longest window holds at least one active day (a
    day with a gold row), so no row has all-zero windows; feature_ts is the end of D
    (D+1 00:00 UTC, when the day is complete) and ingested_at the latest delivery among the days
    of the longest window (when the row's value became known).
    """
    windowed = [spec for spec in contract.features if "ratio" not in spec.compute]
    longest = max(spec.window.days for spec in windowed)
    low = start - timedelta(days=longest - 1)
    metrics = sorted({spec.compute.get("sum") or spec.compute["days_since"] for spec in windowed})
    activity = gold.filter(F.col("activity_date").between(F.lit(low), F.lit(end)))
    grid = (
        activity.select("customer_id").distinct()
        .crossJoin(_days(gold.sparkSession, low, end))
        .join(
            activity.select("customer_id", "activity_date", "last_delivered_at", *metrics, F.lit(1).alias("_active")),
            ["customer_id", "activity_date"],
            "left",
        )
        .fillna(0, subset=[*metrics, "_active"])
    )
    # Presence counts active days (an integer), not the metrics themselves: a sliding sum of
    # amounts leaves a residue like 1e-13 after the window empties, which made all-zero rows
    # with a null ingested_at appear, differently in incremental and full refreshes.
    presence = F.sum("_active").over(_day_window(longest))
    rows = grid.select(
        "customer_id",
        "activity_date",
        *[_window_feature(spec).alias(spec.name) for spec in windowed],
        F.max("last_delivered_at").over(_day_window(longest)).alias(contract.ingested_at_key),
        presence.alias("_presence"),
    ).filter(F.col("activity_date").between(F.lit(start), F.lit(end)) & (F.col("_presence") > 0))
    for spec in contract.features:
        if "ratio" in spec.compute:
            numerator, denominator = spec.compute["ratio"]
            ratio = F.when(F.col(denominator) != 0, F.col(numerator) / F.col(denominator))
            rows = rows.withColumn(spec.name, ratio.cast("double"))
    return rows.select(
        "customer_id",
        F.to_timestamp(F.date_add("activity_date", 1)).alias(contract.timestamp_key),
        contract.ingested_at_key,
        *contract.feature_names,
    )


def compute_profile_features(customers: DataFrame, contract: FeatureContract) -> DataFrame:
    """One row per customer profile change, valid from its event time; the latest delivery wins."""
    latest = Window.partitionBy("customer_id", "event_ts").orderBy(F.desc("delivered_at"), F.desc("event_id"))
    return (
        customers.withColumn("_rank", F.row_number().over(latest))
        .filter(F.col("_rank") == 1)
        .select(
            "customer_id",
            F.col("event_ts").alias(contract.timestamp_key),
            F.col("delivered_at").alias(contract.ingested_at_key),
            *[F.col(spec.compute["column"]).alias(spec.name) for spec in contract.features],
        )
    )


# ---------------------------------------------------------------- refresh = scope + rows + deletes


def _day_of(contract: FeatureContract) -> Column:
    """The feature day D of a daily row (feature_ts is the end of D)."""
    return F.to_date(F.col(contract.timestamp_key) - F.expr("INTERVAL 1 MICROSECOND"))


def _staged(rows: DataFrame, plan: dict[str, Any]) -> DataFrame:
    """Tag staged rows with their refresh, so a later run never publishes stale staging rows."""
    return rows.withColumn(REFRESH_ID, F.lit(plan["refresh_id"]))


def _with_deletes(rows: DataFrame, existing_in_scope: DataFrame, contract: FeatureContract) -> DataFrame:
    """Recomputed rows plus a delete marker for every row of the scope that no longer exists."""
    return with_deletes(rows, existing_in_scope, [*contract.entity_keys, contract.timestamp_key])


def _empty(existing: DataFrame, plan: dict[str, Any]) -> DataFrame:
    return _staged(existing.limit(0).withColumn(DELETED, F.lit(False)), plan)


def _contract_and_plan(
    source: DeltaVersions, refreshes: DataFrame, contract_config: dict[str, Any], table: dict[str, Any], features: dict[str, Any]
) -> tuple[FeatureContract, dict[str, Any]]:
    """The table's parsed contract and the plan of this refresh (shared by every feature table)."""
    contract = parse_contract(table["name"], contract_config)
    return contract, plan_refresh(source, refreshes, contract, features)


def refresh_activity_features(
    gold: DeltaVersions,
    existing: DataFrame,
    refreshes: DataFrame,
    contract_config: dict[str, Any],
    table: dict[str, Any],
    features: dict[str, Any],
) -> tuple[DataFrame, dict[str, Any]]:
    """Recompute the feature days a refresh must touch; return staged rows (with deletes) and the plan.

    Incrementally, that is from the first activity day that differs between the gold version
    last reflected and gold now (inserted, changed or deleted customer-days), or the first day
    past the old end of data, to the last day of data: later windows include the changed day.
    """
    contract, plan = _contract_and_plan(gold, refreshes, contract_config, table, features)
    current = gold.current
    needs_rows = plan["mode"] in ("full", "incremental", "backfill")
    data_end = current.agg(F.max("activity_date")).collect()[0][0] if needs_rows else None
    if plan["mode"] in ("full", "incremental"):
        if plan["mode"] == "full":
            changed, old_end = current, None
        else:
            before = gold.at(plan["since_version"])
            content = [c for c in current.columns if c != "_updated_at"]
            changed = changed_rows(before, current, content)
            old_end = before.agg(F.max("activity_date")).collect()[0][0]
        first, last = changed.agg(F.min("activity_date"), F.max("activity_date")).collect()[0]
        if first is not None and old_end is not None and data_end is not None and data_end > old_end:
            # Days past the old end of data are new for every customer whose windows reach them,
            # changed or not.
            first = min(first, old_end + timedelta(days=1))
        # The scope reaches the old end of data too: when data shrinks, rows past its new end go.
        ends = [d for d in (last, data_end, old_end) if d is not None]
        plan["start"], plan["end"] = first, max(ends) if first else None
    if plan["start"] is None:
        return _empty(existing, plan), {**plan, "mode": "none" if plan["mode"] != "disabled" else "disabled"}
    # Rows exist only up to the last day of data (a backfill or the scope may reach past it).
    compute_end = min(plan["end"], data_end) if data_end is not None else None
    if compute_end is not None and compute_end >= plan["start"]:
        rows = compute_activity_features(current, plan["start"], compute_end, contract)
    else:
        rows = compute_activity_features(current, plan["start"], plan["start"], contract).limit(0)
    in_scope = existing if plan["mode"] == "full" else existing.filter(
        _day_of(contract).between(F.lit(plan["start"]), F.lit(plan["end"]))
    )
    return _staged(_with_deletes(rows, in_scope, contract), plan), plan


def refresh_profile_features(
    customers: DeltaVersions,
    existing: DataFrame,
    refreshes: DataFrame,
    contract_config: dict[str, Any],
    table: dict[str, Any],
    features: dict[str, Any],
) -> tuple[DataFrame, dict[str, Any]]:
    """Recompute the profiles of customers whose silver rows changed since the version last
    reflected (or a backfill's days, or everything)."""
    contract, plan = _contract_and_plan(customers, refreshes, contract_config, table, features)
    if plan["mode"] in ("none", "disabled"):
        return _empty(existing, plan), plan
    current = customers.current
    if plan["mode"] == "backfill":
        rows = compute_profile_features(current, contract)
        day = F.to_date(contract.timestamp_key)
        window = day.between(F.lit(plan["start"]), F.lit(plan["end"]))
        rows, in_scope = rows.filter(window), existing.filter(window)
    elif plan["mode"] == "incremental":
        changed = changed_rows(customers.at(plan["since_version"]), current, PROFILE_CHANGE_COLUMNS)
        changed = changed.select("customer_id").distinct()
        rows = compute_profile_features(current.join(changed, "customer_id", "left_semi"), contract)
        in_scope = existing.join(changed, "customer_id", "left_semi")
    else:
        rows, in_scope = compute_profile_features(current, contract), existing
    return _staged(_with_deletes(rows, in_scope, contract), plan), plan


# ---------------------------------------------------------------- validate, publish, record


def validate_staged(
    staged: DataFrame, plan: dict[str, Any], contract_config: dict[str, Any], table: dict[str, Any]
) -> tuple[DataFrame, pd.DataFrame, dict[str, Any]]:
    """Validate this refresh's staged rows against the contract; pass them on only if they hold.

    Returns the rows to MERGE (delete markers included), the distribution summaries and the
    summaries as MLflow metrics. A hard violation raises and nothing is published.
    """
    contract = parse_contract(table["name"], contract_config)
    rows = staged.filter(F.col(REFRESH_ID) == plan["refresh_id"]).drop(REFRESH_ID)
    if plan["mode"] in ("none", "disabled"):
        logger.info("%s: nothing to refresh (%s)", contract.table, plan["mode"])
        return rows.limit(0), pd.DataFrame(), {}
    upserts = rows.filter(~F.col(DELETED)).drop(DELETED)
    summaries = feature_summaries(upserts, contract)
    enforce(check_contract(upserts, contract, summaries))
    metrics = {name: {"value": value, "step": 0} for name, value in summary_metrics(summaries).items()}
    return rows, summaries, metrics


def record_refresh(
    staged: DataFrame,
    plan: dict[str, Any],
    summaries: pd.DataFrame,
    published: dict[str, Any],
    contract_config: dict[str, Any],
    table: dict[str, Any],
) -> tuple[DataFrame, DataFrame, dict[str, Any]]:
    """After the MERGE: the refresh's audit row, its summaries per table version, the contract stamp.

    The refresh log also records the source version each table reflects (the next incremental
    refresh's starting point) and is the backfill audit (mode ``backfill``); the
    summaries carry the table version they describe and the contract hash it was written under.
    """
    contract = parse_contract(table["name"], contract_config)
    spark = staged.sparkSession
    stamp = {"properties": contract.table_properties()}
    if plan["mode"] in ("none", "disabled"):
        # A disabled table is left as it is, contract stamp included.
        untouched = {} if plan["mode"] == "disabled" else stamp
        return spark.createDataFrame([], REFRESH_SCHEMA), spark.createDataFrame([], SUMMARY_SCHEMA), untouched
    counts = {
        row[DELETED]: row["count"]
        for row in staged.filter(F.col(REFRESH_ID) == plan["refresh_id"]).groupBy(DELETED).count().collect()
    }
    refresh = {
        "table": contract.table,
        "refresh_id": plan["refresh_id"],
        "mode": plan["mode"],
        "scope": _scope_label(plan),
        "rows_upserted": int(counts.get(False, 0)),
        "rows_deleted": int(counts.get(True, 0)),
        "version_before": plan["version_before"],
        "version_after": published["version"],
        "contract_hash": contract.hash,
        "source_version": plan["source_version"],
        "refreshed_at": plan["refreshed_at"],
    }
    logger.info(
        "%s: %s refresh of %s: %d rows upserted, %d deleted; version %s -> %s; contract %s",
        contract.table, plan["mode"], _scope_label(plan), refresh["rows_upserted"], refresh["rows_deleted"],
        plan["version_before"], published["version"], contract.hash,
    )
    columns = [c.split()[0] for c in SUMMARY_SCHEMA.split(", ")]
    versioned = summaries.assign(
        version=published["version"], refresh_id=plan["refresh_id"], contract_hash=contract.hash,
        min=summaries["min"].map(_text), max=summaries["max"].map(_text),
    ).reindex(columns=columns)
    versioned = versioned.astype(object).where(versioned.notna(), None)
    return (
        spark.createDataFrame([refresh], REFRESH_SCHEMA),
        spark.createDataFrame(versioned.to_dict("records"), SUMMARY_SCHEMA),
        stamp,
    )


def _text(value: Any) -> str | None:
    """Min/max of any feature type as text (numeric, categorical and timestamp features share a column)."""
    return None if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)
