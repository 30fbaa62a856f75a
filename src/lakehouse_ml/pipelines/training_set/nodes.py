"""Training-set nodes: a label spine from silver, point-in-time feature lookups, leakage proofs.

The training set is reproducible: its Delta table carries the spine definition, the lookups, the
on-demand feature definitions, the versions of every table it read and the contract hashes, and
:func:`rebuild_training_set` builds the same rows again from exactly those versions.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lakehouse_ml.features.contracts import FeatureContract
from lakehouse_ml.features.expressions_spark import with_on_demand_features
from lakehouse_ml.features.lookup import FeatureLookup, build_training_set
from lakehouse_ml.features.on_demand import (
    OnDemandFeature,
    definitions,
    looked_up_on_demand,
    parse_on_demand,
)
from lakehouse_ml.features.tables import (
    CUTOFF,
    ENTITY,
    LABEL,
    SPEC_PROPERTY,
    feature_lookups,
    parsed_contracts,
    resolve_lookups,
)
from lakehouse_ml.modeling.guards import (
    LookupCoverage,
    coverage_problem,
    label_problem,
    matched_counts,
    raise_problems,
    unmatched_causes,
)

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------- label spine


def cutoff_dates(first_day: date, last_day: date, spine: dict[str, Any]) -> list[date]:
    """Cutoffs every ``every_days`` from warm-up end while the label horizon is fully observed."""
    first = (
        pd.Timestamp(spine["first_cutoff"]).date()
        if spine.get("first_cutoff")
        else first_day + timedelta(days=spine["warmup_days"])
    )
    last = last_day - timedelta(days=spine["horizon_days"])
    return (
        [first + timedelta(days=i) for i in range(0, (last - first).days + 1, spine["every_days"])]
        if last >= first
        else []
    )


def build_label_spine(orders: DataFrame, spine: dict[str, Any]) -> DataFrame:
    """One row per (customer active at the cutoff, cutoff): churned = no order within the horizon.

    Active at cutoff C = at least one order in [C - active_lookback_days, C). Churned = no order
    in [C, C + horizon_days). Cutoffs are midnights UTC; only cutoffs whose horizon is fully
    inside the data are used, so no label is guessed.
    """
    bounds = orders.agg(F.min(F.to_date("event_ts")), F.max(F.to_date("event_ts"))).collect()[0]
    if bounds[0] is None:
        return orders.sparkSession.createDataFrame([], f"{ENTITY} string, {CUTOFF} timestamp, {LABEL} int")
    cutoffs = cutoff_dates(bounds[0], bounds[1], spine)
    logger.info(
        "label spine: %d cutoffs from %s to %s",
        len(cutoffs),
        cutoffs[0] if cutoffs else "-",
        cutoffs[-1] if cutoffs else "-",
    )
    spark = orders.sparkSession
    cutoff_frame = spark.createDataFrame([(c,) for c in cutoffs], "cutoff date").select(
        F.to_timestamp("cutoff").alias(CUTOFF)
    )
    events = orders.select(ENTITY, "event_ts")
    lookback = F.expr(f"INTERVAL {int(spine['active_lookback_days'])} DAYS")
    horizon = F.expr(f"INTERVAL {int(spine['horizon_days'])} DAYS")
    active = (
        events.join(cutoff_frame, (events.event_ts >= F.col(CUTOFF) - lookback) & (events.event_ts < F.col(CUTOFF)))
        .select(ENTITY, CUTOFF)
        .distinct()
    )
    ordered_after = (
        events.join(cutoff_frame, (events.event_ts >= F.col(CUTOFF)) & (events.event_ts < F.col(CUTOFF) + horizon))
        .select(ENTITY, CUTOFF)
        .distinct()
        .withColumn("_ordered", F.lit(1))
    )
    return active.join(ordered_after, [ENTITY, CUTOFF], "left").select(
        ENTITY, CUTOFF, F.when(F.col("_ordered").isNull(), 1).otherwise(0).cast("int").alias(LABEL)
    )


# ---------------------------------------------------------------- point-in-time lookups


def training_set_spec(
    spine: dict[str, Any],
    lookups: dict[str, Any],
    contracts: dict[str, FeatureContract],
    versions: dict[str, Any],
    on_demand: Mapping[str, OnDemandFeature],
) -> dict[str, Any]:
    """Everything needed to rebuild the training set exactly."""
    return {
        "spine": spine,
        "lookups": lookups,
        "on_demand": definitions(on_demand),
        "sources": {
            name: {
                "path": info["path"],
                "version": info["version"],
                "contract_hash": contracts[name].hash if name in contracts else None,
            }
            for name, info in sorted(versions.items())
        },
    }


def assemble_training_set(
    spine_rows: DataFrame,
    tables: Mapping[str, DataFrame],
    orders_info: dict[str, Any],
    infos: Mapping[str, dict[str, Any]],
    previous: dict[str, Any],
    feature_tables: dict[str, Any],
    on_demand_features: dict[str, Any] | None,
    training: dict[str, Any],
) -> tuple[DataFrame, dict[str, Any]]:
    """Look features up point in time for every spine row, add the on-demand features as of each
    cutoff; skip the write if nothing changed.

    Every enabled feature table is looked up (:func:`resolve_lookups`). ``orders_info`` and
    ``infos`` give the versions of the tables read; the spec built from them is recorded on the
    table. When the recorded spec equals the new one, the same rows would be written again, so
    nothing is written (re-runs on unchanged input add no version).
    """
    contracts = parsed_contracts(feature_tables)
    resolved = resolve_lookups(contracts, training)
    on_demand = looked_up_on_demand(contracts, resolved, on_demand_features)
    versions = {"orders_silver": orders_info, **{name: infos[name] for name in resolved}}
    spec = json.dumps(
        training_set_spec(training["spine"], resolved, contracts, versions, on_demand), sort_keys=True, default=str
    )
    if previous.get("properties", {}).get(SPEC_PROPERTY) == spec:
        logger.info(
            "training set: sources and definition unchanged since version %s; not rewritten", previous["version"]
        )
        return spine_rows.limit(0), {}
    if previous.get("version") is not None and spine_rows.isEmpty():
        # An empty frame is not written over an existing table (skip_empty), so the recorded spec
        # must not change either: the table keeps describing the rows it holds.
        logger.warning(
            "training set: the spine has no rows (no cutoff fits warm-up and horizon in the data); "
            "version %s is left as it is",
            previous["version"],
        )
        return spine_rows.limit(0), {}
    lookups = feature_lookups(tables, contracts, resolved)
    frame = build_training_set(spine_rows, lookups, ENTITY, CUTOFF)
    guard_training_set(frame, lookups, training.get("guards") or {})
    return with_on_demand_features(frame, on_demand, CUTOFF), {"properties": {SPEC_PROPERTY: spec}}


def guard_training_set(frame: DataFrame, lookups: list[FeatureLookup], guards: dict[str, Any]) -> None:
    """Fail before anything is written when a lookup matched too few spine rows or the label has one class.

    Lookups that match nothing give all-NULL features and a model that learns nothing without a
    word; the cause of the unmatched rows is measured only when the share is too low.
    """
    counts = matched_counts(frame, lookups, LABEL)
    min_share = float(guards.get("min_matched_share", 0.0))
    problems = []
    for lookup in lookups:
        coverage = LookupCoverage(
            table=lookup.label,
            rows=counts["rows"],
            matched=counts["matched"][lookup.label],
            keys=tuple(lookup.lookup_key),
        )
        if coverage_problem(coverage, min_share):
            coverage = replace(coverage, causes=unmatched_causes(frame, lookup, CUTOFF))
        logger.info(
            "training set: lookup %s matched %d of %d spine rows (%.1f%%)",
            coverage.table,
            coverage.matched,
            coverage.rows,
            100 * coverage.share,
        )
        problems.append(coverage_problem(coverage, min_share))
    problems.append(label_problem(counts["labels"], LABEL))
    raise_problems(problems, "training set")


def rebuild_training_set(spec: dict[str, Any], feature_tables: dict[str, Any], spark: Any) -> DataFrame:
    """Rebuild a training set from its recorded spec: every source read at its recorded version, the
    on-demand features computed by their recorded definitions."""

    def at_version(name: str) -> DataFrame:
        source = spec["sources"][name]
        return spark.read.format("delta").option("versionAsOf", source["version"]).load(source["path"])

    if "on_demand" not in spec:
        raise ValueError(
            "training set spec: recorded before on-demand features were part of it; its rows cannot be rebuilt "
            "exactly (run the training_set pipeline once to record a complete spec)"
        )
    contracts = parsed_contracts(feature_tables)
    undeclared = sorted(set(spec["lookups"]) - set(contracts))
    if undeclared:
        raise ValueError(
            f"training set spec: it read feature tables {undeclared}, which feature_tables no longer declares"
        )
    tables = {name: at_version(name) for name in spec["lookups"]}
    spine_rows = build_label_spine(at_version("orders_silver"), spec["spine"])
    frame = build_training_set(spine_rows, feature_lookups(tables, contracts, spec["lookups"]), ENTITY, CUTOFF)
    return with_on_demand_features(frame, parse_on_demand(spec["on_demand"]), CUTOFF)


# ---------------------------------------------------------------- leakage guard and demo


def check_point_in_time(
    training_set: DataFrame, feature_tables: dict[str, Any], training: dict[str, Any]
) -> dict[str, Any]:
    """Prove no feature row used is later than its cutoff (or known after it, when filtered).

    Raises if any is; returns the proof counts as MLflow metrics.
    """
    contracts = parsed_contracts(feature_tables)
    checks = {}
    for name, config in resolve_lookups(contracts, training).items():
        ts, known = f"{name}__{contracts[name].timestamp_key}", f"{name}__{contracts[name].ingested_at_key}"
        if ts not in training_set.columns:
            continue
        checks[f"leakage.{name}.feature_after_cutoff"] = F.sum((F.col(ts) > F.col(CUTOFF)).cast("int"))
        if config.get("filter_by_ingested_at", True):
            checks[f"leakage.{name}.known_after_cutoff"] = F.sum((F.col(known) > F.col(CUTOFF)).cast("int"))
        checks[f"leakage.{name}.rows_matched"] = F.count(ts)
    checks["training_set.rows"] = F.count(F.lit(1))
    checks["training_set.churn_rate"] = F.avg(LABEL)
    result = {
        k: (v or 0) for k, v in training_set.agg(*[c.alias(k) for k, c in checks.items()]).collect()[0].asDict().items()
    }
    leaks = {k: v for k, v in result.items() if ("after_cutoff" in k and v)}
    logger.info("point-in-time proof: %s", ", ".join(f"{k}={v}" for k, v in result.items()))
    if leaks:
        raise AssertionError(f"training set leaks future data: {leaks}")
    return {k: {"value": float(v), "step": 0} for k, v in result.items()}


def _model_auc(train: pd.DataFrame, test: pd.DataFrame, features: list[str]) -> float:
    """Test AUC of a plain logistic regression: the yardstick for leakage, not the product model."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    model.fit(train[features].fillna(0).to_numpy(), train[LABEL].to_numpy())
    return float(roc_auc_score(test[LABEL], model.predict_proba(test[features].fillna(0).to_numpy())[:, 1]))


def _naive_sets(
    spine_rows: DataFrame, table: DataFrame, contract: FeatureContract, names: list[str], horizon_days: int
) -> dict[str, DataFrame]:
    """Two common point-in-time mistakes: the latest snapshot, and features as of the label's end."""
    prefix = f"{contract.table}__"
    renamed = [F.col(n).alias(f"{prefix}{n}") for n in names]
    latest = table.groupBy(ENTITY).agg(F.max(contract.timestamp_key).alias("_latest"))
    snapshot = table.join(latest, [ENTITY]).filter(F.col(contract.timestamp_key) == F.col("_latest"))
    shifted = spine_rows.withColumn("_as_of", F.col(CUTOFF) + F.expr(f"INTERVAL {int(horizon_days)} DAYS"))
    at_label_end = build_training_set(
        shifted.select(ENTITY, CUTOFF, LABEL, "_as_of"),
        [
            FeatureLookup(
                source=table,
                feature_names=names,
                lookup_key=ENTITY,
                timestamp_key=contract.timestamp_key,
                prefix=prefix,
            )
        ],
        ENTITY,
        "_as_of",
    )
    return {
        "naive_latest": spine_rows.join(snapshot.select(ENTITY, *renamed), ENTITY, "left"),
        "naive_label_end": at_label_end.drop("_as_of"),
    }


def _demo_table(contracts: dict[str, FeatureContract], lookups: dict[str, Any], configured: str | None) -> str | None:
    """The table the demo joins naively: the configured one, else the first looked-up daily table."""
    if configured is None:
        return next((name for name in lookups if contracts[name].kind == "daily_windows"), None)
    if configured not in contracts:
        raise ValueError(
            f"training_set.leakage_demo.table: {configured!r} is not a declared feature table; declared are {sorted(contracts)}"
        )
    return configured if configured in lookups else None


def leakage_demo(
    training_set: DataFrame,
    spine_rows: DataFrame,
    tables: Mapping[str, DataFrame],
    feature_tables: dict[str, Any],
    training: dict[str, Any],
) -> dict[str, Any]:
    """How much naive joins inflate a plain model's test AUC against the point-in-time set.

    Two mistakes are measured on one table's features (``training_set.leakage_demo.table``):
    joining each customer's latest snapshot, and joining features as of the end of the label
    horizon (features computed "now" for labels of the past).
    """
    demo = training["leakage_demo"]
    contracts = parsed_contracts(feature_tables)
    lookups = resolve_lookups(contracts, training)
    name = _demo_table(contracts, lookups, demo.get("table"))
    if not demo.get("enabled", True) or name is None:
        return {}
    names = lookups[name]["features"]
    columns = [f"{name}__{n}" for n in names]
    frames = {"point_in_time": training_set}
    frames.update(_naive_sets(spine_rows, tables[name], contracts[name], names, training["spine"]["horizon_days"]))
    frames = {kind: frame.select(ENTITY, CUTOFF, LABEL, *columns).toPandas() for kind, frame in frames.items()}
    correct = frames["point_in_time"]
    cutoffs = np.sort(correct[CUTOFF].unique())
    split = cutoffs[int(len(cutoffs) * (1 - demo["test_fraction"]))] if len(cutoffs) > 1 else None
    if split is None or correct[LABEL].nunique() < 2:
        logger.warning("leakage demo skipped: too few cutoffs or a single class")
        return {}
    aucs = {
        kind: _model_auc(frame[frame[CUTOFF] < split], frame[frame[CUTOFF] >= split], columns)
        for kind, frame in frames.items()
    }
    logger.info(
        "leakage demo (test AUC of the same model): point-in-time %.3f, naive latest snapshot %.3f (%+.3f), "
        "features as of the label's end %.3f (%+.3f)",
        aucs["point_in_time"],
        aucs["naive_latest"],
        aucs["naive_latest"] - aucs["point_in_time"],
        aucs["naive_label_end"],
        aucs["naive_label_end"] - aucs["point_in_time"],
    )
    metrics = {f"leakage_demo.auc_{kind}": value for kind, value in aucs.items()}
    metrics.update(
        {
            f"leakage_demo.auc_inflation_{kind}": aucs[kind] - aucs["point_in_time"]
            for kind in ("naive_latest", "naive_label_end")
        }
    )
    return {name: {"value": float(value), "step": 0} for name, value in metrics.items()}
