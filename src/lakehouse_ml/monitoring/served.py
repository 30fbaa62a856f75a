"""What was served, windowed: batch predictions and the inference log's served rows, the baselines
and scope of the versions served, their model inputs and slices, and their churn labels.

Windows are ``window_days`` long, aligned on 1970-01-01, each row's window given by its first day
and the day after its last (exclusive end); a run recomputes the latest ``lookback_windows``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakehouse_ml.features.tables import ENTITY
from lakehouse_ml.monitoring.baseline import slice_value
from lakehouse_ml.monitoring.performance import OBSERVED_LABEL, PROBABILITY

logger = logging.getLogger(__name__)

WINDOW = ["window_start", "window_end"]
GROUP = [*WINDOW, "source", "model_name", "model_version"]
SLICED = [*GROUP, "slice", "slice_value"]
SERVED_COLUMNS = [*GROUP, ENTITY, "served_ts", PROBABILITY, "threshold", "features", "flags"]


def window_start(day: Column, window_days: int) -> Column:
    """The first day of the ``window_days``-long window holding ``day`` (windows aligned on 1970-01-01)."""
    epoch = F.lit("1970-01-01").cast("date")
    offset = F.floor(F.datediff(day, epoch) / F.lit(window_days)) * F.lit(window_days)
    return F.date_add(epoch, offset.cast("int"))


def windowed(frame: DataFrame, day: Column, window_days: int) -> DataFrame:
    """``frame`` with its window's first day and the day after its last (exclusive end)."""
    start = window_start(day, window_days)
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
        PROBABILITY,
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
        PROBABILITY,
        "threshold",
        "features",
        "flags",
    )


def served_rows(
    predictions: DataFrame, inference_log: DataFrame, sources: Sequence[str], window_days: int, lookback_windows: int
) -> DataFrame:
    """Batch predictions and served online rows of the latest ``lookback_windows`` windows, windowed."""
    known = {"batch": _batch_rows(predictions), "online": _online_rows(inference_log)}
    unknown = sorted(set(sources) - set(known))
    if unknown:
        raise ValueError(f"monitoring.sources: unknown source(s) {unknown}; expected among {sorted(known)}")
    rows = None
    for name in sources:
        rows = known[name] if rows is None else rows.unionByName(known[name])
    rows = windowed(rows.where(F.col(PROBABILITY).isNotNull()), F.col("_day"), window_days)
    latest = rows.agg(F.max("window_start")).collect()[0][0]
    if latest is None:
        logger.warning("monitoring: no served rows in %s yet (run inference or the scoring service first)", sources)
        return rows.select(*SERVED_COLUMNS)
    first = F.date_sub(F.lit(latest), window_days * (lookback_windows - 1))
    return rows.where(F.col("window_start") >= first).select(*SERVED_COLUMNS)


def monitored_baselines(
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


def in_scope(frame: pd.DataFrame, scope: Mapping[str, Any]) -> pd.DataFrame:
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


def slice_specs(baselines: Mapping[str, Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The slices the monitored versions were validated on (a later version's definition of a name wins)."""
    specs: dict[str, Mapping[str, Any]] = {}
    for _, baseline in sorted(baselines.items(), key=lambda item: int(item[0]) if str(item[0]).isdigit() else 0):
        specs.update(baseline.get("slice_specs") or {})
    return specs


def with_slices(frame: DataFrame, slices: Mapping[str, Mapping[str, Any]]) -> DataFrame:
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


def parsed_inputs(served: DataFrame, baselines: dict[str, dict[str, Any]]) -> DataFrame:
    """Served rows of monitored versions with their model inputs parsed into columns (materialised once:
    every drift query reads it)."""
    schema = _input_schema(baselines)
    rows = served.where(F.col("model_version").isin(list(baselines) or [""])).drop("flags")
    parsed = rows.withColumn("_inputs", F.from_json("features", schema))
    return parsed.select(
        *[c for c in rows.columns if c != "features"], *[F.col("_inputs")[f.name].alias(f.name) for f in schema.fields]
    )


def slice_frames(rows: DataFrame, baseline: Mapping[str, Any]) -> list[tuple[DataFrame, Mapping[str, Any]]]:
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


def churn_labels(served: DataFrame, orders: DataFrame, horizon_days: int) -> DataFrame:
    """Served rows with ``label`` = 1 when the customer placed no order within the label horizon after
    the serving time (the training set's churn definition), null while the horizon is not yet observed."""
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
    return (
        served.join(ordered, [ENTITY, "served_ts"], "left")
        .withColumn(OBSERVED_LABEL, label.cast("int"))
        .drop("_ordered")
    )
