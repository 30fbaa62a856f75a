"""The ``performance_metrics`` table: realized performance (labels known) and its label-free
estimate per window, version and slice, with a status against the version's reference ROC AUC
and how far the estimate was off where both exist."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakehouse_ml.monitoring.drift import level
from lakehouse_ml.monitoring.performance import (
    OBSERVED_LABEL,
    PROBABILITY,
    performance_from_histogram,
    score_histogram,
)
from lakehouse_ml.monitoring.served import SLICED, slice_specs, with_slices
from lakehouse_ml.monitoring.signals import INFORMATION, SIGNAL_TABLE_COLUMNS, signal_frame

logger = logging.getLogger(__name__)

PERFORMANCE_TABLE_COLUMNS = [*SIGNAL_TABLE_COLUMNS, "basis", "lower", "upper", "trusted"]


def performance_status(
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
    return dict(INFORMATION)


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
        columns=PERFORMANCE_TABLE_COLUMNS,
    )


def performance_signals(
    labeled: DataFrame, baselines: Mapping[str, Mapping[str, Any]], settings: Mapping[str, Any]
) -> pd.DataFrame:
    """Realized performance (labels known) and its label-free estimate (all rows) per window, version and
    slice (``settings``: the ``monitoring.performance`` parameters)."""
    started = time.perf_counter()
    rows = with_slices(labeled.where(F.col("model_version").isin(list(baselines) or [""])), slice_specs(baselines))
    histogram = score_histogram(rows, SLICED, score=PROBABILITY, label=OBSERVED_LABEL, bins=int(settings["bins"]))
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
        status = performance_status(row, baselines[row["model_version"]]["reference"], settings["roc_auc_drop"])
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
    frame = pd.DataFrame(records, columns=PERFORMANCE_TABLE_COLUMNS)
    errors = _estimation_errors(frame) if len(frame) else frame.iloc[:0]
    frame = pd.concat([frame, errors], ignore_index=True) if len(errors) else frame
    frame = signal_frame(frame, PERFORMANCE_TABLE_COLUMNS)
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
