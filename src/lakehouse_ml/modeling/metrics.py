"""Binary-classification metrics shared by tuning, evaluation gates and monitoring.

Scores are probabilities of the positive class. Every function takes plain arrays or frames and
returns plain dicts, so the same figures land in MLflow metrics, JSON reports and Delta tables.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    log_loss,
    precision_recall_curve,
    roc_auc_score,
)

UNKNOWN = "unknown"

logger = logging.getLogger(__name__)


def calibration_error(labels: Any, scores: Any, n_bins: int = 10) -> float:
    """Expected calibration error: bin-weighted |mean score − positive rate| over equal-width bins."""
    y, p = np.asarray(labels, dtype=float), np.asarray(scores, dtype=float)
    if len(y) == 0:
        return float("nan")
    # Bin i holds scores in [i/n, (i+1)/n); a score of exactly 1.0 belongs to the last bin.
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    error = 0.0
    for b in np.unique(bins):
        member = bins == b
        error += member.sum() / len(y) * abs(p[member].mean() - y[member].mean())
    return float(error)


def threshold_metrics(labels: Any, scores: Any, threshold: float) -> dict[str, float]:
    """Precision, recall, F1 and the predicted positive rate when ``score >= threshold`` is positive."""
    y, predicted = np.asarray(labels).astype(int), np.asarray(scores, dtype=float) >= threshold
    true_positive = int((predicted & (y == 1)).sum())
    precision = true_positive / predicted.sum() if predicted.sum() else 0.0
    recall = true_positive / (y == 1).sum() if (y == 1).sum() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "predicted_positive_rate": float(predicted.mean()) if len(y) else float("nan"),
    }


def confusion_counts(labels: Any, scores: Any, threshold: float) -> dict[str, int]:
    """True/false positives/negatives at ``threshold``."""
    y, predicted = np.asarray(labels).astype(int) == 1, np.asarray(scores, dtype=float) >= threshold
    return {
        "true_negative": int((~predicted & ~y).sum()),
        "false_positive": int((predicted & ~y).sum()),
        "false_negative": int((~predicted & y).sum()),
        "true_positive": int((predicted & y).sum()),
    }


def binary_metrics(labels: Any, scores: Any, threshold: float) -> dict[str, float]:
    """ROC AUC, PR AUC, log loss, Brier, calibration error and threshold metrics, with counts.

    Ranking metrics need both classes: with one class only they are left out (not NaN, which would
    read as a score in MLflow's charts).
    """
    y, p = np.asarray(labels).astype(int), np.clip(np.asarray(scores, dtype=float), 0.0, 1.0)
    metrics: dict[str, float] = {"rows": float(len(y)), "positives": float(y.sum())}
    if len(y) == 0:
        return metrics
    metrics["positive_rate"] = float(y.mean())
    metrics["mean_score"] = float(p.mean())
    if 0 < y.sum() < len(y):
        metrics["roc_auc"] = float(roc_auc_score(y, p))
        metrics["pr_auc"] = float(average_precision_score(y, p))
    metrics["log_loss"] = float(log_loss(y, p, labels=[0, 1]))
    metrics["brier"] = float(np.mean((p - y) ** 2))
    metrics["calibration_error"] = calibration_error(y, p)
    metrics.update(threshold_metrics(y, p, threshold))
    metrics["threshold"] = float(threshold)
    return metrics


def choose_threshold(labels: Any, scores: Any, strategy: dict[str, Any]) -> dict[str, float | str]:
    """The operating threshold chosen on validation scores by ``strategy``.

    ``{name: max_f1}``: the threshold with the best F1; ``{name: min_recall, value: r}``: the
    highest threshold that still reaches recall ``r`` (the fewest alerts for that coverage);
    ``{name: min_precision, value: q}``: the lowest threshold with precision at least ``q`` (the
    most positives found at that precision). Returns the threshold and its validation figures.
    """
    y, p = np.asarray(labels).astype(int), np.asarray(scores, dtype=float)
    if not 0 < y.sum() < len(y):
        raise ValueError("choose_threshold: validation labels hold a single class; no threshold can be chosen")
    precision, recall, thresholds = precision_recall_curve(y, p)
    # precision/recall have one more entry than thresholds (the point recall = 0); drop it.
    precision, recall = precision[:-1], recall[:-1]
    name = strategy.get("name", "max_f1")
    if name == "max_f1":
        f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
        index = int(np.argmax(f1))
    elif name == "min_recall":
        target = _strategy_value(strategy)
        eligible = np.flatnonzero(recall >= target)
        if not len(eligible):
            raise ValueError(f"choose_threshold: no threshold reaches recall {target} on validation data")
        index = int(eligible.max())
    elif name == "min_precision":
        eligible = np.flatnonzero(precision >= _strategy_value(strategy))
        if not len(eligible):
            raise ValueError(f"choose_threshold: no threshold reaches precision {strategy['value']} on validation data")
        index = int(eligible.min())
    else:
        raise ValueError(f"choose_threshold: unknown strategy {name!r}; expected max_f1, min_recall or min_precision")
    threshold = float(thresholds[index])
    return {"strategy": name, "threshold": threshold, **threshold_metrics(y, p, threshold)}


def _strategy_value(strategy: dict[str, Any]) -> float:
    """The strategy's target in [0, 1], with a message naming the strategy when it is not."""
    if "value" not in strategy or not 0.0 <= float(strategy["value"]) <= 1.0:
        raise ValueError(
            f"choose_threshold: strategy {strategy.get('name')!r} needs `value` between 0 and 1 "
            f"(a share, e.g. 0.6), got {strategy.get('value')!r}"
        )
    return float(strategy["value"])


# ---------------------------------------------------------------- slices


def metric_key(text: Any) -> str:
    """``text`` reduced to characters MLflow accepts in metric names (no ``=``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or UNKNOWN


def bucket_label(low: float, high: float | None) -> str:
    """The name of bucket ``[low, high)`` (``<low>_plus`` for the last, open one)."""
    return f"{low:g}_{high:g}" if high is not None else f"{low:g}_plus"


def slice_specs(
    slices: Mapping[str, Any] | None, columns: Sequence[str], setting: str = "training.slices"
) -> dict[str, dict[str, Any]]:
    """The declared slices as ``{name: {"column": c[, "edges": [...]]}}``, checked against ``columns``.

    ``None`` or ``{}`` declares none, and a slice set to ``None`` is removed (how an environment drops
    one: Kedro merges an environment's mapping into base key by key). A slice over a column that is
    not a model input is left out with a warning: it names a feature of a table this environment does
    not build (or an on-demand input of one), and the loop must run without optional tables.
    """
    specs: dict[str, dict[str, Any]] = {}
    for name, raw in (slices or {}).items():
        if raw is None:
            continue
        spec = {"column": raw} if isinstance(raw, str) else dict(raw) if isinstance(raw, Mapping) else None
        if spec is None or not isinstance(spec.get("column"), str) or set(spec) - {"column", "edges"}:
            raise ValueError(
                f"{setting}.{name}: expected a model input's name or {{column: <input>, edges: [<ascending numbers>]}}, "
                f"got {raw!r}"
            )
        if "edges" in spec:
            edges = spec["edges"]
            try:
                spec["edges"] = [float(e) for e in edges]
            except (TypeError, ValueError):
                spec["edges"] = None
            if not spec["edges"] or any(b <= a for a, b in zip(spec["edges"], spec["edges"][1:])):
                raise ValueError(
                    f"{setting}.{name}.edges: expected a non-empty list of strictly ascending numbers, got {edges!r}"
                )
        if spec["column"] not in columns:
            logger.warning(
                "slice %r left out: %r is not a model input here (a disabled feature table?); set %s.%s: null to say so",
                name,
                spec["column"],
                setting,
                name,
            )
            continue
        specs[str(name)] = spec
    return specs


def slice_values(frame: pd.DataFrame, spec: dict[str, Any] | str) -> pd.Series:
    """The slice value of each row: a column's value, or its bucket for ``{column, edges}``.

    Buckets are ``[edge_i, edge_i+1)`` named ``<low>_<high>``, the last one ``<low>_plus``; values
    below the first edge fall in the first bucket. Nulls are ``unknown``.
    """
    spec = {"column": spec} if isinstance(spec, str) else spec
    values = frame[spec["column"]]
    if "edges" not in spec:
        return values.astype(object).map(lambda v: UNKNOWN if pd.isna(v) else str(v))
    edges = [float(e) for e in spec["edges"]]
    labels = [bucket_label(low, high) for low, high in zip(edges, [*edges[1:], None])]
    numeric = pd.to_numeric(values, errors="coerce")
    index = np.searchsorted(edges, numeric.to_numpy(dtype=float), side="right") - 1
    return pd.Series(
        [UNKNOWN if math.isnan(v) else labels[max(i, 0)] for v, i in zip(numeric.to_numpy(dtype=float), index)],
        index=frame.index,
    )


def slice_metrics(
    frame: pd.DataFrame, label: str, score: str, slices: dict[str, Any], threshold: float, min_rows: int
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per slice and value: rows, positives and :func:`binary_metrics`, or why they were skipped.

    A value with fewer than ``min_rows`` rows or a single class gets counts only, with ``skipped``
    saying why: a figure on a handful of rows would be noise dressed up as a measurement.
    """
    report: dict[str, dict[str, dict[str, Any]]] = {}
    for name, spec in slices.items():
        values = slice_values(frame, spec)
        report[name] = {}
        for value in sorted(values.unique()):
            rows = frame[values == value]
            entry: dict[str, Any] = {"rows": len(rows), "positives": int(rows[label].sum())}
            if len(rows) < min_rows:
                entry["skipped"] = f"fewer than {min_rows} rows"
            elif not 0 < entry["positives"] < len(rows):
                entry["skipped"] = "a single class"
            else:
                entry["metrics"] = binary_metrics(rows[label], rows[score], threshold)
            report[name][value] = entry
    return report


def flat_slice_metrics(report: dict[str, dict[str, dict[str, Any]]], metrics: list[str]) -> dict[str, float]:
    """``{<metric>__<slice>_<value>: figure}`` for the measured slice values of :func:`slice_metrics`.

    Values are reduced to MLflow's metric-name characters; two values that reduce to the same text
    (``EU/West``, ``EU West``) are told apart by a short hash instead of overwriting each other.
    """
    flat = {}
    for name, values in report.items():
        keys = _value_keys(list(values))
        for value, entry in values.items():
            for metric in metrics:
                if metric in entry.get("metrics", {}):
                    flat[f"{metric}__{metric_key(name)}_{keys[value]}"] = entry["metrics"][metric]
    return flat


def _value_keys(values: list[str]) -> dict[str, str]:
    """:func:`metric_key` of each value; values that would share a key get a short hash of the raw value."""
    keys = {value: metric_key(value) for value in values}
    counts = pd.Series(list(keys.values())).value_counts()
    for value, key in keys.items():
        if counts[key] > 1:
            keys[value] = f"{key}_{hashlib.sha1(str(value).encode()).hexdigest()[:6]}"
    return keys
