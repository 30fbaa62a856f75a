"""The ``data_quality`` table: what was served per window, source and version (rows, the online
flagged rate, schema changes of the inputs' JSON), the batch spine's rejected, stale and
out-of-contract shares, and per input the null-rate increase and unseen categories."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakehouse_ml.monitoring.drift import level
from lakehouse_ml.monitoring.report import PREDICTION_FEATURE
from lakehouse_ml.monitoring.served import GROUP, WINDOW, in_scope, windowed
from lakehouse_ml.monitoring.signals import INFORMATION, signal_frame

logger = logging.getLogger(__name__)


def _rejection_rates(served: DataFrame, rejected: DataFrame, window_days: int) -> DataFrame:
    """Per batch window and version: served, rejected, stale (freshness) and out-of-contract counts."""
    stale = F.col("reason").contains(": freshness")
    rejections = (
        windowed(rejected, F.col("scoring_date"), window_days)
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
        dict(INFORMATION)
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


def quality_signals(
    served: DataFrame,
    drift: pd.DataFrame,
    rejected: DataFrame,
    baselines: Mapping[str, Mapping[str, Any]],
    scope: Mapping[str, Any],
    window_days: int,
    limits: Mapping[str, Any],
) -> pd.DataFrame:
    """What was served, per window, source and version: rejected (stale, out-of-contract) and flagged
    rates, null-rate increases and unseen categories per input, schema changes (``limits``: the
    ``monitoring.quality`` parameters)."""
    served = served.where(F.col("model_version").isin(list(baselines) or [""]))
    frame = signal_frame(
        _served_quality(served, baselines, limits)
        + _rejection_quality(served, rejected, window_days, limits)
        + _input_quality(in_scope(drift, scope), baselines, limits)
    )
    logger.info("monitoring data quality: %d rows, %d act", len(frame), int((frame["status"] == "act").sum()))
    return frame
