"""Feature nodes: every declared feature table, refreshed incrementally and merged into Delta.

No node knows a table's name: they work on every table declared under
``conf/<env>/feature_tables/`` (``params:feature_tables``). Every refresh recomputes a *scope* of
a table (a range of feature days, or a set of entities; see :mod:`.kinds`), stages the rows,
validates every table against its contract and publishes each with one MERGE that upserts the
recomputed rows and deletes the rows of the scope that no longer exist. So an incremental run, a
backfill and a full rebuild leave exactly the rows a full recomputation produces (tested).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import date, datetime, timezone
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakehouse_ml.datasets.delta_versions import DeltaVersions
from lakehouse_ml.features.contracts import FeatureContract
from lakehouse_ml.features.tables import parsed_contracts
from lakehouse_ml.features.validation import check_contract, enforce, feature_summaries, summary_metrics
from lakehouse_ml.lakehouse import DELETED
from lakehouse_ml.pipelines.features.kinds import KINDS, required_columns

logger = logging.getLogger(__name__)

REFRESH_ID = "_refresh_id"
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
    if backfill:
        # A range only: the rest of the table still reflects the version it did before.
        return {
            **plan,
            "mode": "backfill",
            "start": backfill[0],
            "end": backfill[1],
            "source_version": plan["since_version"],
        }
    if features.get("full_rebuild") or plan["since_version"] is None:
        return {**plan, "mode": "full"}
    if previous.get("contract_hash") not in (None, contract.hash):
        # A changed contract (a feature added, a window changed) changes rows the source did not.
        logger.info(
            "%s: contract changed since its last refresh (%s -> %s); recomputed in full",
            contract.table,
            previous["contract_hash"],
            contract.hash,
        )
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


# ---------------------------------------------------------------- stage = plan + rows + deletes


def _staged(rows: DataFrame, plan: dict[str, Any]) -> DataFrame:
    """Tag staged rows with their refresh, so a later run never publishes stale staging rows."""
    return rows.withColumn(REFRESH_ID, F.lit(plan["refresh_id"]))


def _source(sources: Mapping[str, DeltaVersions], contract: FeatureContract) -> DeltaVersions:
    """The table's source, checked to hold what its kind and features read."""
    where = f"feature_tables.{contract.table}"
    if contract.source not in sources:
        raise ValueError(
            f"{where}.source: {contract.source!r} is not a table the lakehouse writes; expected one of {sorted(sources)}"
        )
    source = sources[contract.source]
    columns = source.current.columns
    missing = [column for column in required_columns(contract) if column not in columns]
    if missing:
        raise ValueError(
            f"{where}: source {contract.source} has no column(s) {missing}, which kind '{contract.kind}' and its "
            f"features' compute read; its columns are {sorted(columns)}"
        )
    return source


def stage_refreshes(
    current: Mapping[str, DataFrame],
    refreshes: DataFrame,
    feature_tables: dict[str, Any],
    features: dict[str, Any],
    **sources: DeltaVersions,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Plan every enabled table's refresh and compute its scope: staged rows (with delete markers)
    and the plans, per table. A disabled table is left as it is, contract stamp included.

    ``current`` holds the tables as they are before this run's MERGE; ``sources`` the versions of
    every lakehouse table a contract may name as its ``source``.
    """
    contracts = parsed_contracts(feature_tables)
    unknown = sorted(set((features.get("backfill") or {}).get("tables") or ()) - set(contracts))
    if unknown:
        raise ValueError(
            f"features.backfill.tables: {unknown} are not declared feature tables; declared are {sorted(contracts)}"
        )
    staged, plans = {}, {}
    for name, contract in contracts.items():
        if not contract.enabled:
            logger.info("%s: disabled by its contract; left as it is", name)
            continue
        source = _source(sources, contract)
        plan = plan_refresh(source, refreshes, contract, features)
        rows, plan = KINDS[contract.kind](source, current.get(name), contract, plan)
        staged[name], plans[name] = {"rows": _staged(rows, plan)}, plan
    return staged, plans


# ---------------------------------------------------------------- validate, publish, record


def validate_refreshes(
    staged: Mapping[str, DataFrame], plans: dict[str, dict[str, Any]], feature_tables: dict[str, Any]
) -> tuple[dict[str, dict[str, Any]], dict[str, pd.DataFrame], dict[str, Any]]:
    """Validate every table's staged rows against its contract; pass them on only if all hold.

    Returns the update of each table (the rows to MERGE with their delete markers, the MERGE keys
    and the contract stamp), the distribution summaries and the summaries as MLflow metrics. A
    hard violation in any table raises and nothing is published.
    """
    contracts = parsed_contracts(feature_tables)
    updates, summaries, metrics = {}, {}, {}
    for name, plan in plans.items():
        contract = contracts[name]
        rows = staged[name].filter(F.col(REFRESH_ID) == plan["refresh_id"]).drop(REFRESH_ID)
        updates[name] = {
            "rows": rows,
            "keys": [*contract.entity_keys, contract.timestamp_key],
            "stamp": {"properties": contract.table_properties()},
        }
        if plan["mode"] == "none":
            logger.info("%s: nothing to refresh", name)
            continue
        upserts = rows.filter(~F.col(DELETED)).drop(DELETED)
        summaries[name] = feature_summaries(upserts, contract)
        enforce(check_contract(upserts, contract, summaries[name]))
        metrics.update(
            {metric: {"value": value, "step": 0} for metric, value in summary_metrics(summaries[name]).items()}
        )
    return updates, summaries, metrics


def record_refreshes(
    staged: Mapping[str, DataFrame],
    plans: dict[str, dict[str, Any]],
    summaries: dict[str, pd.DataFrame],
    published: Mapping[str, dict[str, Any]],
    refreshes: DataFrame,
    feature_tables: dict[str, Any],
) -> tuple[DataFrame, DataFrame]:
    """After the MERGEs: one audit row per refreshed table and its summaries per table version.

    The refresh log also records the source version each table reflects (the next incremental
    refresh's starting point) and is the backfill audit (mode ``backfill``); the summaries carry
    the table version they describe and the contract hash it was written under.
    """
    contracts = parsed_contracts(feature_tables)
    audit, versioned = [], []
    columns = [c.split()[0] for c in SUMMARY_SCHEMA.split(", ")]
    for name, plan in plans.items():
        if plan["mode"] == "none":
            continue
        contract, version = contracts[name], published[name]["version"]
        counts = {
            row[DELETED]: row["count"]
            for row in staged[name].filter(F.col(REFRESH_ID) == plan["refresh_id"]).groupBy(DELETED).count().collect()
        }
        refresh = {
            "table": name,
            "refresh_id": plan["refresh_id"],
            "mode": plan["mode"],
            "scope": _scope_label(plan),
            "rows_upserted": int(counts.get(False, 0)),
            "rows_deleted": int(counts.get(True, 0)),
            "version_before": plan["version_before"],
            "version_after": version,
            "contract_hash": contract.hash,
            "source_version": plan["source_version"],
            "refreshed_at": plan["refreshed_at"],
        }
        logger.info(
            "%s: %s refresh of %s: %d rows upserted, %d deleted; version %s -> %s; contract %s",
            name,
            plan["mode"],
            _scope_label(plan),
            refresh["rows_upserted"],
            refresh["rows_deleted"],
            plan["version_before"],
            version,
            contract.hash,
        )
        audit.append(refresh)
        table_summaries = (
            summaries[name]
            .assign(
                table=name,
                version=version,
                refresh_id=plan["refresh_id"],
                contract_hash=contract.hash,
                min=summaries[name]["min"].map(_text),
                max=summaries[name]["max"].map(_text),
            )
            .reindex(columns=columns)
        )
        versioned += table_summaries.astype(object).where(table_summaries.notna(), None).to_dict("records")
    spark = refreshes.sparkSession
    return spark.createDataFrame(audit, REFRESH_SCHEMA), spark.createDataFrame(versioned, SUMMARY_SCHEMA)


def _text(value: Any) -> str | None:
    """Min/max of any feature type as text (numeric, categorical and timestamp features share a column)."""
    return None if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)
