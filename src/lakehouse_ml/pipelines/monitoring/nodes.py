"""Monitoring nodes: served rows → windows → drift, performance and data quality → rules → actions.

What was served comes from two places: the batch predictions (``ml.churn_predictions``, one
window per scoring date) and the scoring service's inference log (``monitoring.inference_log``,
served rows only, windowed by the day they were logged). Both keep the model inputs as JSON, so
monitoring sees exactly what each model version was given. Every row carries its model version,
and each version is compared with its own baseline (``monitoring.baselines``, written at
evaluation: training-row input profiles, test-window scores, reference performance) and with its
previous window.

Windows are ``window_days`` long, aligned on 1970-01-01 (daily by default); each run recomputes
the latest ``lookback_windows`` of them and replaces their rows in the metric tables. All three
tables share the long signal schema (window, source, model, slice, feature, metric, value,
warn/act thresholds, status), so the rules read them alike.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakehouse_ml.features.tables import ENTITY
from lakehouse_ml.monitoring.baseline import slice_value
from lakehouse_ml.monitoring.drift import feature_drift, js_distance, level, prediction_drift, psi
from lakehouse_ml.monitoring.performance import performance_from_histogram, score_histogram
from lakehouse_ml.monitoring.report import PREDICTION_FEATURE, monitoring_report
from lakehouse_ml.monitoring.rules import evaluate_rules, resolve_actions, validate_rules
from lakehouse_ml.release import BLOCK_TAG, ReleaseRefusedError, plan_rollback, release_event

logger = logging.getLogger(__name__)

WINDOW = ["window_start", "window_end"]
GROUP = [*WINDOW, "source", "model_name", "model_version"]
SLICED = [*GROUP, "slice", "slice_value"]
SERVED_COLUMNS = [*GROUP, ENTITY, "served_ts", "probability", "threshold", "features", "flags"]
SIGNAL_COLUMNS = [*SLICED, "feature", "metric", "value", "warn", "act", "status", "n_rows", "details"]
PERFORMANCE_COLUMNS = [*SIGNAL_COLUMNS, "basis", "lower", "upper", "trusted"]
ACTION_COLUMNS = [
    "action_id",
    "rule",
    "action",
    "model_name",
    "model_version",
    "window_start",
    "window_end",
    "breached_windows",
    "considered_windows",
    "evidence",
    "description",
    "mode",
    "status",
    "blocked_reason",
    "target_version",
    "fired_at",
    "catalog",
    "kedro_run_id",
]
_INFO = {"warn": None, "act": None, "status": "ok"}


# ---------------------------------------------------------------- served rows and windows


def _window_start(day: Column, window_days: int) -> Column:
    """The first day of the ``window_days``-long window holding ``day`` (windows aligned on 1970-01-01)."""
    epoch = F.lit("1970-01-01").cast("date")
    offset = F.floor(F.datediff(day, epoch) / F.lit(window_days)) * F.lit(window_days)
    return F.date_add(epoch, offset.cast("int"))


def _windowed(frame: DataFrame, day: Column, window_days: int) -> DataFrame:
    """``frame`` with its window's first day and the day after its last (exclusive end)."""
    start = _window_start(day, window_days)
    return frame.withColumns({"window_start": start, "window_end": F.date_add(start, window_days)})


def _batch_rows(predictions: DataFrame) -> DataFrame:
    """Batch predictions as served rows (window day = scoring date)."""
    return predictions.select(
        F.lit("batch").alias("source"),
        F.col("scoring_date").alias("_day"),
        "model_name",
        F.col("model_version").cast("string").alias("model_version"),
        ENTITY,
        F.col("scoring_ts").alias("served_ts"),
        "probability",
        "threshold",
        "features",
        F.lit(None).cast("array<string>").alias("flags"),
    )


def _online_rows(log: DataFrame) -> DataFrame:
    """The inference log's served rows (shadow scores were never returned to a caller)."""
    return log.where(F.col("served")).select(
        F.lit("online").alias("source"),
        F.to_date("logged_at").alias("_day"),
        "model_name",
        F.col("model_version").cast("string").alias("model_version"),
        ENTITY,
        F.col("logged_at").alias("served_ts"),
        "probability",
        "threshold",
        "features",
        "flags",
    )


def collect_served_rows(predictions: DataFrame, inference_log: DataFrame, monitoring: dict[str, Any]) -> DataFrame:
    """Batch predictions and served online rows of the latest ``lookback_windows`` windows, windowed."""
    window_days = int(monitoring["window_days"])
    sources = {"batch": _batch_rows(predictions), "online": _online_rows(inference_log)}
    unknown = sorted(set(monitoring["sources"]) - set(sources))
    if unknown:
        raise ValueError(f"monitoring.sources: unknown source(s) {unknown}; expected among {sorted(sources)}")
    rows = None
    for name in monitoring["sources"]:
        rows = sources[name] if rows is None else rows.unionByName(sources[name])
    rows = _windowed(rows.where(F.col("probability").isNotNull()), F.col("_day"), window_days)
    latest = rows.agg(F.max("window_start")).collect()[0][0]
    if latest is None:
        logger.warning(
            "monitoring: no served rows in %s yet (run inference or the scoring service first)", monitoring["sources"]
        )
        return rows.select(*SERVED_COLUMNS)
    first = F.date_sub(F.lit(latest), window_days * (int(monitoring["lookback_windows"]) - 1))
    return rows.where(F.col("window_start") >= first).select(*SERVED_COLUMNS)


# ---------------------------------------------------------------- baselines of the served versions


def served_baselines(
    served: DataFrame, baselines: DataFrame, registry_state: dict[str, Any]
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Per served model version: its baseline (found through the version's run id); and this run's scope:
    the monitored versions and the first and last window recomputed."""
    spans = (
        served.groupBy("model_name", "model_version")
        .agg(F.min("window_start").alias("first"), F.max("window_start").alias("last"))
        .collect()
    )
    versions = sorted((row["model_name"], row["model_version"]) for row in spans)
    stored = {
        row["model_run_id"]: json.loads(row["baseline"])
        for row in baselines.select("model_run_id", "baseline").collect()
    }
    found: dict[str, dict[str, Any]] = {}
    for name, version in versions:
        entry = registry_state["versions"].get(str(version))
        run_id = (entry or {}).get("tags", {}).get("run_id") or (entry or {}).get("run_id")
        if name != registry_state["name"] or entry is None:
            logger.warning(
                "monitoring: %s version %s is not in the registry of %s: not monitored",
                name,
                version,
                registry_state["name"],
            )
        elif run_id not in stored:
            logger.warning(
                "monitoring: no baseline for %s version %s (run %s): it was evaluated before baselines existed; "
                "its windows are skipped (evaluate and register it again to monitor it)",
                name,
                version,
                run_id,
            )
        else:
            found[str(version)] = {"run_id": run_id, **stored[run_id]}
    logger.info("monitoring: baselines for versions %s of %s", sorted(found) or "none", [v for _, v in versions])
    scope = {
        "versions": sorted(found),
        "first_window": min((row["first"] for row in spans), default=None),
        "last_window": max((row["last"] for row in spans), default=None),
    }
    return found, scope


def _in_scope(frame: pd.DataFrame, scope: Mapping[str, Any]) -> pd.DataFrame:
    """The rows of this run's windows and versions (the tables also hold earlier runs' windows and
    versions no longer served, which this run neither recomputed nor acts on)."""
    if scope["first_window"] is None:
        return frame.iloc[:0]
    days = pd.to_datetime(frame["window_start"]).dt.date
    mine = frame["model_version"].astype(str).isin(scope["versions"])
    return frame[mine & (days >= scope["first_window"]) & (days <= scope["last_window"])]


def _input_schema(baselines: Mapping[str, Mapping[str, Any]]) -> T.StructType:
    """The JSON schema of the model inputs of every monitored version (numeric as double, categories as string)."""
    kinds: dict[str, str] = {}
    for baseline in baselines.values():
        for column, profile in baseline["features"].items():
            kinds.setdefault(column, profile["kind"])
    return T.StructType(
        [
            T.StructField(column, T.DoubleType() if kind == "numeric" else T.StringType(), True)
            for column, kind in kinds.items()
        ]
    )


def _slice_specs(baselines: Mapping[str, Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The slices the monitored versions were validated on (a later version's definition of a name wins)."""
    specs: dict[str, Mapping[str, Any]] = {}
    for _, baseline in sorted(baselines.items(), key=lambda item: int(item[0]) if str(item[0]).isdigit() else 0):
        specs.update(baseline.get("slice_specs") or {})
    return specs


def _with_slices(frame: DataFrame, slices: Mapping[str, Mapping[str, Any]]) -> DataFrame:
    """One copy of each served row per slice: ``all``, then its slice value from the input read from the
    served JSON (named as ``slice_value`` names the training rows)."""
    entries = [F.struct(F.lit("all").alias("slice"), F.lit("all").alias("slice_value"))]
    for name, spec in slices.items():
        value = slice_value(spec, F.get_json_object("features", f"$.{spec['column']}"))
        entries.append(F.struct(F.lit(name).alias("slice"), value.alias("slice_value")))
    return (
        frame.withColumn("_slice", F.explode(F.array(*entries)))
        .select("*", "_slice.slice", "_slice.slice_value")
        .drop("_slice")
    )


def served_inputs(served: DataFrame, baselines: dict[str, dict[str, Any]]) -> DataFrame:
    """Served rows of monitored versions with their model inputs parsed into columns (materialised once:
    every drift query reads it)."""
    schema = _input_schema(baselines)
    rows = served.where(F.col("model_version").isin(list(baselines) or [""])).drop("flags")
    parsed = rows.withColumn("_inputs", F.from_json("features", schema))
    return parsed.select(
        *[c for c in rows.columns if c != "features"], *[F.col("_inputs")[f.name].alias(f.name) for f in schema.fields]
    )


def _slice_frames(rows: DataFrame, baseline: Mapping[str, Any]) -> list[tuple[DataFrame, Mapping[str, Any]]]:
    """The rows of each slice that has a baseline (``all`` first), labelled with the slice, and that baseline."""
    parts = [(rows.withColumns({"slice": F.lit("all"), "slice_value": F.lit("all")}), baseline)]
    specs = baseline.get("slice_specs") or {}
    for name, values in sorted((baseline.get("slices") or {}).items()):
        spec = specs.get(name)
        if spec is None or spec["column"] not in rows.columns:
            continue
        for value, reference in sorted(values.items()):
            part = rows.where(slice_value(spec) == value).withColumns(
                {"slice": F.lit(name), "slice_value": F.lit(value)}
            )
            parts.append((part, reference))
    return parts


# ---------------------------------------------------------------- drift


def _signal(
    row: Mapping[str, Any], keys: Sequence[str], feature: str, metric: str, value: Any, **extra: Any
) -> dict[str, Any]:
    """One long signal row."""
    number = None if value is None or (isinstance(value, float) and np.isnan(value)) else float(value)
    signal = {**{k: row[k] for k in keys}, "feature": feature, "metric": metric, "value": number, **_INFO, **extra}
    if number is None and signal["status"] not in ("untrusted",):
        signal["status"] = "no_data"
    return signal


def _feature_signals(drift: pd.DataFrame) -> list[dict[str, Any]]:
    """Long rows of ``feature_drift`` output: the main metric with its status, the others as information."""
    rows = []
    for row in drift.to_dict("records"):
        details = {
            "log_base": row["log_base"],
            "bins": row["bins"],
            "n_baseline": row["n_baseline"],
            "shares": row["shares"],
        }
        main = {"warn": row["warn"], "act": row["act"], "status": row["status"], "n_rows": row["n_current"]}
        rows.append(
            _signal(row, SLICED, row["feature"], row["metric"], row["value"], **main, details=json.dumps(details))
        )
        info = {"n_rows": row["n_current"], "details": None}
        others = ["wasserstein_norm"] if row["kind"] == "numeric" else ["linf"]
        for metric in [*others, "null_share"]:
            value = row["null_share_current"] if metric == "null_share" else row[metric]
            rows.append(_signal(row, SLICED, row["feature"], metric, value, **info))
        if row["p_value"] is not None and not pd.isna(row["p_value"]):
            rows.append(
                _signal(
                    row,
                    SLICED,
                    row["feature"],
                    "p_value",
                    row["p_value"],
                    n_rows=row["n_current"],
                    details=json.dumps({"test": row["p_value_test"]}),
                )
            )
    return rows


def _prediction_signals(drift: pd.DataFrame, rate_limits: Mapping[str, float]) -> list[dict[str, Any]]:
    """Long rows of ``prediction_drift`` output: score PSI and positive-rate change with status, the rate itself."""
    rows = []
    for row in drift.to_dict("records"):
        n = {"n_rows": row["n_current"]}
        details = json.dumps({"log_base": row["log_base"], "shares": row["shares"], "threshold": row["threshold"]})
        rows.append(
            _signal(
                row,
                SLICED,
                PREDICTION_FEATURE,
                "psi",
                row["psi"],
                warn=row["warn"],
                act=row["act"],
                status=row["status"],
                **n,
                details=details,
            )
        )
        change = row["positive_rate_change"]
        status = level(None if change is None else abs(change), rate_limits["warn"], rate_limits["act"])
        rows.append(
            _signal(
                row,
                SLICED,
                PREDICTION_FEATURE,
                "positive_rate_change",
                change,
                warn=rate_limits["warn"],
                act=rate_limits["act"],
                status=status,
                **n,
                details=json.dumps({"baseline": row["positive_rate_baseline"], "absolute": True}),
            )
        )
        rows.append(
            _signal(row, SLICED, PREDICTION_FEATURE, "positive_rate", row["positive_rate_current"], **n, details=None)
        )
        rows.append(
            _signal(row, SLICED, PREDICTION_FEATURE, "wasserstein_norm", row["wasserstein_norm"], **n, details=None)
        )
    return rows


def _versus_previous(signals: pd.DataFrame) -> pd.DataFrame:
    """PSI (numeric, scores) or JS distance (categories) of each window against the previous window of the
    same source, version, slice and feature, on the baseline's bins; statuses on the same thresholds."""
    main = signals[signals["metric"].isin(["psi", "js_distance"]) & signals["details"].notna()]
    rows = []
    for _, part in main.groupby(
        ["source", "model_name", "model_version", "slice", "slice_value", "feature", "metric"], dropna=False
    ):
        previous = None
        for row in part.sort_values("window_start").to_dict("records"):
            shares = json.loads(row["details"]).get("shares")
            if previous is not None and shares is not None:
                if row["metric"] == "psi":
                    value = psi(previous, shares)
                else:
                    categories = sorted(set(previous) | set(shares))
                    value = js_distance(
                        [previous.get(c, 0.0) for c in categories], [shares.get(c, 0.0) for c in categories]
                    )
                rows.append(
                    {
                        **{k: row[k] for k in SLICED},
                        "feature": row["feature"],
                        "metric": f"{row['metric']}_vs_previous",
                        "value": value,
                        "warn": row["warn"],
                        "act": row["act"],
                        "status": level(value, row["warn"], row["act"]),
                        "n_rows": row["n_rows"],
                        "details": None,
                    }
                )
            if shares is not None:
                previous = shares
    return pd.DataFrame(rows, columns=SIGNAL_COLUMNS)


def _untrusted_small_slices(signals: pd.DataFrame, min_rows: int) -> pd.DataFrame:
    """A slice window with fewer than ``min_rows`` rows keeps its figures but no verdict (its PSI is noise)."""
    small = (signals["slice"] != "all") & (signals["n_rows"] < min_rows) & signals["status"].isin(["ok", "warn", "act"])
    signals.loc[small & signals["warn"].notna(), "status"] = "untrusted"
    return signals


def _signal_frame(rows: list[dict[str, Any]] | pd.DataFrame, columns: Sequence[str] = SIGNAL_COLUMNS) -> pd.DataFrame:
    """Rows as a frame of the signal schema with stable types (dates, strings, floats)."""
    frame = pd.DataFrame(rows, columns=list(columns))
    for column in WINDOW:
        frame[column] = pd.to_datetime(frame[column]).dt.date
    for column in ("value", "warn", "act"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    frame["n_rows"] = pd.to_numeric(frame["n_rows"], errors="coerce").fillna(0).astype("int64")
    return frame


def compute_drift(inputs: DataFrame, baselines: dict[str, dict[str, Any]], monitoring: dict[str, Any]) -> pd.DataFrame:
    """Data drift per input and prediction drift per window, version and slice, against the version's
    baseline and against the previous window."""
    started, drift = time.perf_counter(), monitoring["drift"]
    rows: list[dict[str, Any]] = []
    for version, baseline in sorted(baselines.items()):
        mine = inputs.where(F.col("model_version") == version)
        thresholds = {f: t for f, t in (drift.get("thresholds") or {}).items() if f in baseline["features"]}
        for part, reference in _slice_frames(mine, baseline):
            features = feature_drift(
                part, reference["features"], thresholds, by=SLICED, small_window_rows=int(drift["small_window_rows"])
            )
            scores = prediction_drift(part, reference["scores"], thresholds=drift["prediction"]["psi"], by=SLICED)
            rows += _feature_signals(features) + _prediction_signals(
                scores, drift["prediction"]["positive_rate_change"]
            )
    signals = _untrusted_small_slices(_signal_frame(rows), int(drift["min_slice_rows"]))
    previous = _versus_previous(signals)
    if len(previous):
        signals = _signal_frame(pd.concat([signals, previous], ignore_index=True))
    acting = signals[(signals["status"] == "act") & (signals["slice"] == "all")]
    logger.info(
        "monitoring drift: %d signal rows, %d windows, %d versions; %d act on slice 'all' (%s) in %.1f s",
        len(signals),
        signals[WINDOW].drop_duplicates().shape[0],
        len(baselines),
        len(acting),
        ", ".join(sorted(set(acting["feature"] + "." + acting["metric"]))[:8]) or "none",
        time.perf_counter() - started,
    )
    return signals


# ---------------------------------------------------------------- labels and performance


def label_served_rows(served: DataFrame, orders: DataFrame, training_set: dict[str, Any]) -> DataFrame:
    """Served rows with ``label`` = 1 when the customer placed no order within the label horizon after
    the serving time (the training set's churn definition), null while the horizon is not yet observed."""
    horizon_days = int(training_set["spine"]["horizon_days"])
    horizon = F.expr(f"INTERVAL {horizon_days} DAYS")
    last_day = orders.agg(F.max(F.to_date("event_ts"))).collect()[0][0]
    observed_until = F.lit(last_day).cast("timestamp") if last_day is not None else F.lit(None).cast("timestamp")
    asked = served.where(F.col(ENTITY).isNotNull()).select(ENTITY, "served_ts").distinct()
    events = orders.select(ENTITY, "event_ts")
    ordered = (
        asked.join(events, ENTITY)
        .where((F.col("event_ts") >= F.col("served_ts")) & (F.col("event_ts") < F.col("served_ts") + horizon))
        .select(ENTITY, "served_ts")
        .distinct()
        .withColumn("_ordered", F.lit(1))
    )
    known = (F.col("served_ts") + horizon) <= observed_until
    label = F.when(known & F.col(ENTITY).isNotNull(), F.when(F.col("_ordered").isNull(), 1).otherwise(0))
    return served.join(ordered, [ENTITY, "served_ts"], "left").withColumn("label", label.cast("int")).drop("_ordered")


def _performance_status(
    row: Mapping[str, Any], reference: Mapping[str, Any], drop: Mapping[str, float]
) -> dict[str, Any]:
    """Thresholds and status of one performance row: ROC AUC (realized or estimated) against the
    version's reference minus the allowed drop; other metrics are information.

    A realized ROC AUC acts only when its whole confidence band lies below the act level (the drop
    is significant, not the noise of a small window); it warns when its value is below warn.
    """
    if not row["trusted"]:
        return {"warn": None, "act": None, "status": "untrusted"}
    auc = (reference.get("roc_auc") or {}).get("value")
    if row["metric"] in ("roc_auc", "estimated_roc_auc") and auc is not None:
        warn, act = auc - float(drop["warn"]), auc - float(drop["act"])
        status = level(row["value"], warn, act, higher_is_worse=False)
        upper = row.get("upper")
        if status == "act" and row["metric"] == "roc_auc" and upper is not None and not pd.isna(upper) and upper >= act:
            status = "warn"
        return {"warn": warn, "act": act, "status": status}
    return dict(_INFO)


def _estimation_errors(frame: pd.DataFrame) -> pd.DataFrame:
    """Estimated minus realized ROC AUC where a window has both (how far the label-free estimate was off)."""
    keys = SLICED
    realized = frame[frame["metric"] == "roc_auc"].set_index(keys)
    estimated = frame[frame["metric"] == "estimated_roc_auc"].set_index(keys)
    both = realized.join(estimated[["value"]], rsuffix="_estimated", how="inner").reset_index()
    both = both[both["value"].notna() & both["value_estimated"].notna()]
    return pd.DataFrame(
        {
            **{k: both[k] for k in keys},
            "feature": None,
            "metric": "estimation_error",
            "value": both["value_estimated"] - both["value"],
            "warn": None,
            "act": None,
            "status": "ok",
            "n_rows": both["n_rows"],
            "details": None,
            "basis": "comparison",
            "lower": None,
            "upper": None,
            "trusted": both["trusted"],
        },
        columns=PERFORMANCE_COLUMNS,
    )


def compute_performance(
    labeled: DataFrame, baselines: dict[str, dict[str, Any]], monitoring: dict[str, Any]
) -> pd.DataFrame:
    """Realized performance (labels known) and its label-free estimate (all rows) per window, version and slice."""
    started, settings = time.perf_counter(), monitoring["performance"]
    rows = _with_slices(labeled.where(F.col("model_version").isin(list(baselines) or [""])), _slice_specs(baselines))
    histogram = score_histogram(rows, SLICED, score="probability", label="label", bins=int(settings["bins"]))
    performance = performance_from_histogram(
        histogram,
        SLICED,
        bins=int(settings["bins"]),
        min_positives=int(settings["min_positives"]),
        min_negatives=int(settings["min_negatives"]),
    )
    records = []
    for row in performance.to_dict("records"):
        row["metric"] = (
            row["metric"]
            if row["basis"] == "realized" or row["metric"].startswith("expected")
            else f"estimated_{row['metric']}"
        )
        status = _performance_status(row, baselines[row["model_version"]]["reference"], settings["roc_auc_drop"])
        value = None if pd.isna(row["value"]) else float(row["value"])
        if value is None:
            status["status"] = "no_data"
        records.append(
            {
                **{k: row[k] for k in SLICED},
                "feature": None,
                "metric": row["metric"],
                "value": value,
                **status,
                "n_rows": row["n_rows"],
                "details": row["details"],
                "basis": row["basis"],
                "lower": row["lower"],
                "upper": row["upper"],
                "trusted": bool(row["trusted"]),
            }
        )
    frame = pd.DataFrame(records, columns=PERFORMANCE_COLUMNS)
    errors = _estimation_errors(frame) if len(frame) else frame.iloc[:0]
    frame = pd.concat([frame, errors], ignore_index=True) if len(errors) else frame
    frame = _signal_frame(frame, PERFORMANCE_COLUMNS)
    for column in ("lower", "upper"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    frame["trusted"] = frame["trusted"].astype(bool)
    realized = frame[(frame["metric"] == "roc_auc") & (frame["slice"] == "all")]
    logger.info(
        "monitoring performance: %d rows; realized ROC AUC in %d of %d windows (slice 'all'), %d act, in %.1f s",
        len(frame),
        realized["window_start"].nunique(),
        frame["window_start"].nunique(),
        int((frame["status"] == "act").sum()),
        time.perf_counter() - started,
    )
    return frame


# ---------------------------------------------------------------- data quality


def _rejection_rates(served: DataFrame, rejected: DataFrame, window_days: int) -> DataFrame:
    """Per batch window and version: served, rejected, stale (freshness) and out-of-contract counts."""
    stale = F.col("reason").contains(": freshness")
    rejections = (
        _windowed(rejected, F.col("scoring_date"), window_days)
        .groupBy(*WINDOW, "model_name", F.col("model_version").cast("string").alias("model_version"))
        .agg(
            F.count(F.lit(1)).alias("rejected"),
            F.count(F.when(stale, 1)).alias("stale"),
            F.count(F.when(~stale, 1)).alias("out_of_contract"),
        )
    )
    scored = (
        served.where(F.col("source") == "batch")
        .groupBy(*WINDOW, "model_name", "model_version")
        .agg(F.count(F.lit(1)).alias("served"))
    )
    keys = [*WINDOW, "model_name", "model_version"]
    return scored.join(rejections, keys, "left").fillna(0, ["rejected", "stale", "out_of_contract"])


def _key_counts(served: DataFrame) -> dict[tuple, dict[str, int]]:
    """Per window, source and version: how many rows carry each JSON key of ``features``."""
    keys = served.select(*GROUP, F.explode(F.map_keys(F.from_json("features", "map<string,string>"))).alias("key"))
    found: dict[tuple, dict[str, int]] = {}
    for row in keys.groupBy(*GROUP, "key").count().collect():
        found.setdefault(tuple(row[k] for k in GROUP), {})[row["key"]] = int(row["count"])
    return found


def _quality_row(
    group: Mapping[str, Any],
    metric: str,
    value: float | None,
    limits: Mapping[str, float] | None,
    n: int,
    feature: str | None = None,
    details: Any = None,
) -> dict[str, Any]:
    """One data-quality signal on slice 'all' (information when ``limits`` is None)."""
    status = (
        dict(_INFO)
        if limits is None
        else {
            "warn": limits["warn"],
            "act": limits["act"],
            "status": level(value, limits["warn"], limits["act"]),
        }
    )
    return {
        **{k: group[k] for k in GROUP},
        "slice": "all",
        "slice_value": "all",
        "feature": feature,
        "metric": metric,
        "value": value,
        **status,
        "n_rows": n,
        "details": None if details is None else json.dumps(details),
    }


def _schema_row(
    group: Mapping[str, Any], keys: Mapping[str, int], inputs: Sequence[str], n: int, limits: Mapping[str, float]
) -> dict[str, Any]:
    """Inputs never present in a window's JSON, and keys that are neither inputs nor feature timestamps."""
    missing = sorted(set(inputs) - set(keys))
    extra = sorted(k for k in keys if k not in inputs and not k.endswith("_ts"))
    return _quality_row(
        group,
        "schema_change",
        float(len(missing) + len(extra)),
        limits,
        n,
        details={"missing": missing, "extra": extra},
    )


def _served_quality(served: DataFrame, baselines: Mapping[str, Any], limits: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per window, source and version: rows served, the online flagged rate, schema changes of the JSON."""
    counts = (
        served.groupBy(*GROUP)
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.count(F.when(F.size(F.coalesce("flags", F.array())) > 0, 1)).alias("flagged"),
        )
        .collect()
    )
    keys = _key_counts(served)
    rows = []
    for row in sorted(counts, key=lambda r: tuple(str(r[k]) for k in GROUP)):
        group, n = {k: row[k] for k in GROUP}, int(row["n"])
        rows.append(_quality_row(group, "served_rows", float(n), None, n))
        if group["source"] == "online":
            rows.append(_quality_row(group, "flagged_rate", row["flagged"] / n, limits["flagged_rate"], n))
        inputs = baselines[group["model_version"]]["inputs"]
        rows.append(_schema_row(group, keys.get(tuple(row[k] for k in GROUP), {}), inputs, n, limits["schema_change"]))
    return rows


def _rejection_quality(
    served: DataFrame, rejected: DataFrame, window_days: int, limits: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Per batch window and version: the shares of the spine rejected, stale and out of contract."""
    rows = []
    for rate in _rejection_rates(served, rejected, window_days).collect():
        group, total = {**rate.asDict(), "source": "batch"}, int(rate["served"]) + int(rate["rejected"])
        for metric, count in (
            ("rejected_rate", "rejected"),
            ("stale_feature_rate", "stale"),
            ("out_of_contract_rate", "out_of_contract"),
        ):
            rows.append(_quality_row(group, metric, rate[count] / total if total else None, limits[metric], total))
    return rows


def _input_quality(
    drift: pd.DataFrame, baselines: Mapping[str, Any], limits: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Per window and input (from the drift rows of slice 'all'): null-rate increase over the baseline,
    share of categories the baseline never had."""
    inputs = drift[(drift["slice"] == "all") & (drift["feature"] != PREDICTION_FEATURE)]
    nulls = inputs[inputs["metric"] == "null_share"].set_index([*GROUP, "feature"])["value"]
    rows = []
    for row in inputs[inputs["metric"].isin(["psi", "js_distance"])].to_dict("records"):
        baseline = baselines[row["model_version"]]["features"][row["feature"]]
        current = nulls.get(tuple(row[k] for k in [*GROUP, "feature"]))
        increase = None if current is None or pd.isna(current) else float(current) - float(baseline["null_share"])
        rows.append(
            _quality_row(
                row,
                "null_rate_increase",
                increase,
                limits["null_rate_increase"],
                row["n_rows"],
                row["feature"],
                {"baseline": baseline["null_share"], "current": current},
            )
        )
        if row["metric"] == "js_distance" and row["details"]:
            shares = json.loads(row["details"]).get("shares") or {}
            unseen = {c: share for c, share in shares.items() if c not in baseline["counts"]}
            rows.append(
                _quality_row(
                    row,
                    "unseen_category_rate",
                    float(sum(unseen.values())),
                    limits["unseen_category_rate"],
                    row["n_rows"],
                    row["feature"],
                    {"unseen": sorted(unseen)},
                )
            )
    return rows


def compute_data_quality(
    served: DataFrame,
    drift: pd.DataFrame,
    rejected: DataFrame,
    baselines: dict[str, dict[str, Any]],
    scope: dict[str, Any],
    monitoring: dict[str, Any],
) -> pd.DataFrame:
    """What was served, per window, source and version: rejected (stale, out-of-contract) and flagged
    rates, null-rate increases and unseen categories per input, schema changes."""
    limits = monitoring["quality"]
    served = served.where(F.col("model_version").isin(list(baselines) or [""]))
    frame = _signal_frame(
        _served_quality(served, baselines, limits)
        + _rejection_quality(served, rejected, int(monitoring["window_days"]), limits)
        + _input_quality(_in_scope(drift, scope), baselines, limits)
    )
    logger.info("monitoring data quality: %d rows, %d act", len(frame), int((frame["status"] == "act").sum()))
    return frame


# ---------------------------------------------------------------- rules → actions


def _promotion_times(promotions: DataFrame, model_name: str) -> dict[str, datetime]:
    """When each version last became champion (promotion or rollback onto it)."""
    rows = (
        promotions.where(
            (F.col("model_name") == model_name) & (F.col("alias") == "champion") & F.col("to_version").isNotNull()
        )
        .groupBy(F.col("to_version").cast("string").alias("version"))
        .agg(F.max("event_ts").alias("at"))
        .collect()
    )
    return {f"{model_name}/{row['version']}": row["at"] for row in rows}


def _signals(drift: pd.DataFrame, performance: pd.DataFrame, quality: pd.DataFrame) -> pd.DataFrame:
    """The three tables' rows as one frame with the table they come from."""
    parts = [
        frame[SIGNAL_COLUMNS].assign(table=name)
        for name, frame in (("drift_metrics", drift), ("performance_metrics", performance), ("data_quality", quality))
        if len(frame)
    ]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[*SIGNAL_COLUMNS, "table"])


def _target(action: str, version: str, registry_state: dict[str, Any], registry: dict[str, Any]) -> str | None:
    """The version an action changes: a block applies to the waiting challenger, the rest to the monitored version."""
    if action == "block_promotion":
        return registry_state["aliases"].get(registry["aliases"]["challenger"])
    return version


def _keep_recorded(actions: pd.DataFrame, recorded: pd.DataFrame) -> pd.DataFrame:
    """Actions fired again on the same windows (same ``action_id``) keep their recorded row: a re-run of
    monitoring never executes an action twice (nor retries one that failed: the next window decides)."""
    known = recorded[recorded["action_id"].isin(actions["action_id"])]
    if known.empty:
        return actions
    logger.info("monitoring: %d action(s) already recorded for these windows, not acted on again", len(known))
    fresh = actions[~actions["action_id"].isin(known["action_id"])]
    kept = known.reindex(columns=ACTION_COLUMNS)
    return pd.concat([fresh, kept], ignore_index=True) if len(fresh) else kept.reset_index(drop=True)


def decide_actions(  # noqa: PLR0913
    drift: pd.DataFrame,
    performance: pd.DataFrame,
    quality: pd.DataFrame,
    scope: dict[str, Any],
    recorded: pd.DataFrame,
    promotions: DataFrame,
    registry_state: dict[str, Any],
    registry: dict[str, Any],
    rules: list[dict[str, Any]],
    monitoring: dict[str, Any],
    context: dict[str, Any],
) -> pd.DataFrame:
    """Fire the rules on this run's signals (N of the last K windows, the latest included) and apply the
    environment's policy: alert, or execute (blocked when it must not run); actions already recorded
    for the same windows keep their record."""
    validated = validate_rules(rules)
    signals = _signals(*(_in_scope(frame, scope) for frame in (drift, performance, quality)))
    fired = evaluate_rules(signals, validated, promotions=_promotion_times(promotions, registry_state["name"]))
    actions = resolve_actions(fired, monitoring["actions"]["policy"])
    actions["target_version"] = [
        _target(a, v, registry_state, registry) for a, v in zip(actions["action"], actions["model_version"])
    ]
    no_target = (
        (actions["action"] == "block_promotion")
        & actions["target_version"].isna()
        & (actions["status"] == "to_execute")
    )
    actions.loc[no_target, ["status", "blocked_reason"]] = ["blocked", "no challenger is waiting for promotion"]
    actions["fired_at"] = context["at"]
    actions["catalog"] = context["catalog"]
    actions["kedro_run_id"] = context["kedro_run_id"]
    frame = _keep_recorded(actions.reindex(columns=ACTION_COLUMNS), recorded)
    for row in frame.itertuples():
        logger.warning(
            "monitoring action %s (%s, %s): rule %s on %s version %s, %d of the last %d windows up to %s%s",
            row.action,
            row.mode,
            row.status,
            row.rule,
            row.model_name,
            row.model_version,
            row.breached_windows,
            row.considered_windows,
            row.window_end,
            f" — {row.blocked_reason}" if row.blocked_reason else "",
        )
    logger.info("monitoring: %d rule(s), %d action(s) fired", len(validated), len(frame))
    for column in WINDOW:
        frame[column] = pd.to_datetime(frame[column]).dt.date
    return frame


# ---------------------------------------------------------------- executing actions


def _rollback(
    row: Mapping[str, Any], registry_state: dict[str, Any], registry: dict[str, Any], governance: dict[str, Any]
) -> tuple[list, dict, str | None]:
    """The rollback's registry actions and release event, or the reason it cannot run.

    The actor is whoever runs the monitoring job (its governance record), as for any rollback;
    ``via: monitoring`` tells a rule's rollback from a person's ``kedro run --pipeline rollback``.
    """
    champion = registry_state["aliases"].get(registry["aliases"]["champion"])
    if champion != str(row["model_version"]):
        return (
            [],
            {},
            f"version {row['model_version']} is no longer '{registry['aliases']['champion']}' (it is {champion})",
        )
    reason = f"monitoring rule {row['rule']}: {row['breached_windows']} of the last {row['considered_windows']} windows up to {row['window_end']}"
    try:
        actions, event = plan_rollback(registry_state, registry, {"reason": reason}, governance, via="monitoring")
    except ReleaseRefusedError as error:
        return [], {}, str(error)
    return actions, event, None


def plan_monitoring_actions(
    decided: pd.DataFrame, registry_state: dict[str, Any], registry: dict[str, Any], governance: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """What the actions to execute change: registry actions (rollback alias moves, promotion blocks) with
    their release event, a retraining request (empty: nothing to run), and each action's outcome."""
    registry_actions: list[dict[str, Any]] = []
    event = release_event("rollback", registry_state["name"], [], via="monitoring")
    retrain: dict[str, Any] = {}
    outcome: dict[str, Any] = {}
    for row in decided[decided["status"] == "to_execute"].to_dict("records"):
        if row["action"] == "rollback":
            actions, planned, refused = _rollback(row, registry_state, registry, governance)
            if refused is None and not event["moves"]:
                registry_actions += actions
                event = planned
            outcome[row["action_id"]] = ("failed", refused) if refused else ("executed", None)
        elif row["action"] == "block_promotion":
            reason = (
                f"monitoring rule {row['rule']} fired on version {row['model_version']} (action {row['action_id']})"
            )
            registry_actions.append(
                {"action": "set_version_tag", "version": row["target_version"], "key": BLOCK_TAG, "value": reason}
            )
            outcome[row["action_id"]] = ("executed", None)
        elif row["action"] == "retrain":
            retrain = retrain or {
                "reason": f"monitoring rule {row['rule']} on version {row['model_version']}",
                "action_ids": [],
            }
            retrain["action_ids"].append(row["action_id"])
            outcome[row["action_id"]] = ("executed", None)
        else:
            outcome[row["action_id"]] = ("alerted", f"{row['action']} is done by people; nothing runs")
    return registry_actions, event, retrain, outcome


def record_actions(decided: pd.DataFrame, outcome: dict[str, Any], registry_after: dict[str, Any]) -> pd.DataFrame:
    """The fired actions with their final status (executed, failed with the reason, alerted or blocked)."""
    frame = decided.copy()
    for action_id, (status, reason) in outcome.items():
        mask = frame["action_id"] == action_id
        frame.loc[mask, "status"] = status
        if reason:
            frame.loc[mask, "blocked_reason"] = reason
    for column in ("breached_windows", "considered_windows"):
        frame[column] = frame[column].astype("int64")
    logger.info(
        "monitoring actions: %s; registry %s",
        ", ".join(f"{a} {s}" for a, s in zip(frame["action"], frame["status"])) or "none",
        ", ".join(f"{alias}={version}" for alias, version in sorted(registry_after["aliases"].items())) or "no aliases",
    )
    return frame


# ---------------------------------------------------------------- report and summary


def build_monitoring_report(
    drift: pd.DataFrame,
    performance: pd.DataFrame,
    quality: pd.DataFrame,
    actions: pd.DataFrame,
    scope: dict[str, Any],
    context: dict[str, Any],
) -> tuple[dict[str, Any], str]:
    """The run's charts (drift per feature over time, score distribution, performance with bands, quality) and an HTML page."""
    frames = [_in_scope(frame, scope) for frame in (drift, performance, quality)]
    title = f"Monitoring of {context['catalog']} at {context['at']:%Y-%m-%d %H:%M} UTC"
    report = monitoring_report(*frames, _in_scope(actions, scope), title=title)
    return {f"{name}.png": figure for name, figure in report["figures"].items()}, report["html"]


def summarise_monitoring(
    drift: pd.DataFrame, performance: pd.DataFrame, quality: pd.DataFrame, actions: pd.DataFrame, scope: dict[str, Any]
) -> dict[str, Any]:
    """MLflow metrics of the run: windows, acting signals per table, actions fired and executed."""
    drift, performance, quality, actions = (_in_scope(frame, scope) for frame in (drift, performance, quality, actions))
    figures = {
        "monitoring.windows": drift["window_start"].nunique() if len(drift) else 0,
        "monitoring.drift.act": int((drift["status"] == "act").sum()),
        "monitoring.performance.act": int((performance["status"] == "act").sum()),
        "monitoring.quality.act": int((quality["status"] == "act").sum()),
        "monitoring.actions.fired": len(actions),
        "monitoring.actions.executed": int((actions["status"] == "executed").sum()),
    }
    latest = performance[
        (performance["metric"] == "roc_auc") & (performance["slice"] == "all") & performance["value"].notna()
    ]
    if len(latest):
        figures["monitoring.latest_realized_roc_auc"] = float(latest.sort_values("window_start")["value"].iloc[-1])
    logger.info("monitoring: %s", ", ".join(f"{k.removeprefix('monitoring.')}={v}" for k, v in figures.items()))
    return {name: {"value": float(value), "step": 0} for name, value in figures.items()}
