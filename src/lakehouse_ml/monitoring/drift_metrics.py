"""The ``drift_metrics`` table: data drift per input and prediction drift per window, version and
slice, against the version's baseline and against the previous window, as long signal rows."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakehouse_ml.monitoring.drift import feature_drift, js_distance, level, prediction_drift, psi
from lakehouse_ml.monitoring.report import PREDICTION_FEATURE
from lakehouse_ml.monitoring.served import SLICED, WINDOW, slice_frames
from lakehouse_ml.monitoring.signals import SIGNAL_TABLE_COLUMNS, signal_frame, signal_row, untrusted_small_slices

logger = logging.getLogger(__name__)


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
            signal_row(row, SLICED, row["feature"], row["metric"], row["value"], **main, details=json.dumps(details))
        )
        info = {"n_rows": row["n_current"], "details": None}
        others = ["wasserstein_norm"] if row["kind"] == "numeric" else ["linf"]
        for metric in [*others, "null_share"]:
            value = row["null_share_current"] if metric == "null_share" else row[metric]
            rows.append(signal_row(row, SLICED, row["feature"], metric, value, **info))
        if row["p_value"] is not None and not pd.isna(row["p_value"]):
            rows.append(
                signal_row(
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
            signal_row(
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
            signal_row(
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
            signal_row(
                row, SLICED, PREDICTION_FEATURE, "positive_rate", row["positive_rate_current"], **n, details=None
            )
        )
        rows.append(
            signal_row(row, SLICED, PREDICTION_FEATURE, "wasserstein_norm", row["wasserstein_norm"], **n, details=None)
        )
    return rows


def versus_previous(signals: pd.DataFrame) -> pd.DataFrame:
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
    return pd.DataFrame(rows, columns=SIGNAL_TABLE_COLUMNS)


def drift_signals(
    inputs: DataFrame, baselines: Mapping[str, Mapping[str, Any]], drift: Mapping[str, Any]
) -> pd.DataFrame:
    """Data drift per input and prediction drift per window, version and slice, against the version's
    baseline and against the previous window (``drift``: the ``monitoring.drift`` parameters)."""
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for version, baseline in sorted(baselines.items()):
        mine = inputs.where(F.col("model_version") == version)
        thresholds = {f: t for f, t in (drift.get("thresholds") or {}).items() if f in baseline["features"]}
        for part, reference in slice_frames(mine, baseline):
            features = feature_drift(
                part, reference["features"], thresholds, by=SLICED, small_window_rows=int(drift["small_window_rows"])
            )
            scores = prediction_drift(part, reference["scores"], thresholds=drift["prediction"]["psi"], by=SLICED)
            rows += _feature_signals(features) + _prediction_signals(
                scores, drift["prediction"]["positive_rate_change"]
            )
    signals = untrusted_small_slices(signal_frame(rows), int(drift["min_slice_rows"]))
    previous = versus_previous(signals)
    if len(previous):
        signals = signal_frame(pd.concat([signals, previous], ignore_index=True))
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
