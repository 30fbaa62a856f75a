"""Classifier performance per monitoring window and slice, realized (labels known) and estimated (CBPE).

Everything that touches rows is one Spark group-by (``score_histogram``): per group and score
bin, the row count, labeled rows, positives and score sums. Only that table (at most ``bins`` rows
per group) comes back to the driver; every metric is then computed from it with numpy
(``performance_from_histogram``), so a window of any size costs one aggregation.

Definitions (``B`` = ``bins``; ``P_b`` / ``N_b`` = positives / negatives in score bin ``b``;
``P`` / ``N`` their totals):

* **Score bins**: ``b = min(floor(score * B), B - 1)``, so bin ``b`` holds ``[b/B, (b+1)/B)`` and the
  last one ``[1 - 1/B, 1]``. Null scores are dropped; scores outside [0, 1] or NaN are an error.
  ``floor`` sees the rounded product: with ``B = 1000`` every ``k/1000`` lands in bin ``k``, but
  with ``B = 100``, ``0.29 * 100 = 28.999…`` lands in bin 28. Scores in one bin are ties for
  every metric; with scores on the bin grid (``k/B``, ``k < B``) the metrics are exact.
* **Labels** are 0/1 (any numeric or boolean type; other values are an error); null labels are
  unlabeled rows.
* **ROC AUC** (Mann–Whitney): ``sum_b P_b * (N_{<b} + N_b / 2) / (P * N)``, ``N_{<b}`` the
  negatives in lower bins: the share of (positive, negative) pairs ranked right, ties 1/2.
  Equal to ``sklearn.metrics.roc_auc_score`` on the same ties. Null when ``P`` or ``N`` is 0.
  **Interval** (realized only): ``AUC ± z * SE`` clipped to [0, 1], ``z`` the normal quantile
  of ``(1 + confidence) / 2``, Hanley & McNeil (1982):
  ``SE² = (A(1-A) + (P-1)(Q1-A²) + (N-1)(Q2-A²)) / (P N)``, ``Q1 = A/(2-A)``, ``Q2 = 2A²/(1+A)``.
* **PR AUC** = average precision as ``sklearn.metrics.average_precision_score`` defines it, each
  bin one threshold, from the top bin down: ``sum_b (P_b / P) * TP_b / (TP_b + FP_b)``,
  ``TP_b`` / ``FP_b`` the positives / negatives in bins ``>= b`` (the step sum of precision over
  recall increments; bins without positives add nothing). Null when ``P`` is 0.
* **ECE** (realized only), over ``calibration_bins`` = ``C`` equal-width bins of the score (``C``
  must divide ``B``, so that every score bin falls in one calibration bin):
  ``sum_j n_j / n * |mean score_j - observed rate_j| = sum_j |score sum_j - positives_j| / n``.
  ``details`` lists every calibration bin: ``bin_lower``, ``bin_upper``, ``n``, ``mean_score``,
  ``observed_rate`` (the last two null for an empty bin).
* **observed_rate** = ``P / n`` with the Wilson score interval
  ``(p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)``; **mean_score** = mean score of the
  labeled rows (the rate a calibrated model predicts for them).
* **Estimated (CBPE)**, over ALL rows, labeled or not: a calibrated score ``p`` is ``P(y = 1)``,
  so a bin's expected positives are its score sum and its expected negatives ``n_b - score sum``.
  ROC AUC and PR AUC are the formulas above on these expected counts (as NannyML's CBPE builds
  the expected confusion matrix at every threshold from ``p`` and ``1 - p``; a row's own
  ``p (1 - p)`` counts as a tie). **expected_rate** = mean score. No interval (null).
  The estimate is only as good as the calibration: check ``ece`` once labels arrive.
* **trusted** = positives >= ``min_positives`` and negatives >= ``min_negatives`` (for the
  estimate, its expected counts rounded to integers, which the ``positives`` / ``negatives``
  columns hold). A group without labeled rows has no realized rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from scipy import stats

BIN = "bin"
HISTOGRAM_COUNTS = ["n", "n_labeled", "positives", "score_sum", "score_sum_labeled"]
PERFORMANCE_COLUMNS = [
    "basis",
    "metric",
    "value",
    "lower",
    "upper",
    "n_rows",
    "positives",
    "negatives",
    "trusted",
    "details",
]
REALIZED_METRICS = ("roc_auc", "pr_auc", "ece", "observed_rate", "mean_score")
ESTIMATED_METRICS = ("roc_auc", "pr_auc", "expected_rate")
_INVALID_BIN = -1
_INVALID_LABELS = "__invalid_labels__"
_RESERVED = (BIN, *HISTOGRAM_COUNTS, *PERFORMANCE_COLUMNS)

# A scored row's columns, in predictions, the inference log, monitoring windows and baselines: the
# positive-class probability served, and the outcome observed later (1, 0, or null while unknown).
PROBABILITY, OBSERVED_LABEL = "probability", "label"


# ---------------------------------------------------------------- checks


def _check_by(by: Sequence[str], caller: str) -> list[str]:
    """The group columns as a list: distinct and not a name the output uses."""
    by = list(by)
    clashes = sorted(set(by) & set(_RESERVED))
    if clashes:
        raise ValueError(
            f"{caller}: group column(s) {clashes} clash with output columns; expected names outside {sorted(_RESERVED)}"
        )
    if len(set(by)) != len(by):
        raise ValueError(f"{caller}: group columns {by} repeat a name; expected distinct names")
    return by


def _check_bins(bins: int, caller: str) -> None:
    """``bins`` is a positive integer."""
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"{caller}: bins={bins!r}; expected a positive integer")


def _column(name: str) -> Column:
    """A column by its exact name (dots are not struct access)."""
    return F.col(f"`{name}`")


# ---------------------------------------------------------------- Spark: the one aggregation


def score_histogram(
    frame: DataFrame, by: Sequence[str], *, score: str = PROBABILITY, label: str = OBSERVED_LABEL, bins: int = 1000
) -> pd.DataFrame:
    """Per group and score bin: rows, labeled rows, positives, score sums (one Spark group-by, collected).

    Columns ``[*by, "bin", "n", "n_labeled", "positives", "score_sum", "score_sum_labeled"]``,
    sorted by group and bin; only non-empty bins appear. Null scores are dropped.
    """
    by = _check_by(by, "score_histogram")
    _check_bins(bins, "score_histogram")
    missing = [name for name in (*by, score, label) if name not in frame.columns]
    if missing:
        raise ValueError(
            f"score_histogram: column(s) {missing} not in the frame; expected among {sorted(frame.columns)}"
        )
    s = _column(score).cast("double")
    y = _column(label).cast("double")
    # Invalid scores get their own bin so that the same single aggregation can count them.
    invalid = F.isnan(s) | (s < 0) | (s > 1)
    bin_ = F.when(invalid, F.lit(_INVALID_BIN)).otherwise(F.least(F.floor(s * F.lit(float(bins))), F.lit(bins - 1)))
    labeled = y.isNotNull()
    histogram = (
        frame.where(s.isNotNull())
        .groupBy(*[_column(name).alias(name) for name in by], bin_.cast("int").alias(BIN))
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.count(y).alias("n_labeled"),
            F.count(F.when(y == 1.0, F.lit(1))).alias("positives"),
            F.sum(s).alias("score_sum"),
            F.sum(F.when(labeled, s)).alias("score_sum_labeled"),
            F.count(F.when(labeled & ~y.isin(0.0, 1.0), F.lit(1))).alias(_INVALID_LABELS),
        )
        .toPandas()
    )
    bad_scores = int(histogram.loc[histogram[BIN] == _INVALID_BIN, "n"].sum())
    if bad_scores:
        raise ValueError(
            f"score_histogram: {bad_scores} row(s) of {score!r} are NaN or outside [0, 1]; expected probabilities"
        )
    bad_labels = int(histogram[_INVALID_LABELS].sum())
    if bad_labels:
        raise ValueError(
            f"score_histogram: {bad_labels} labeled row(s) of {label!r} are not 0 or 1; expected 0, 1 or null"
        )
    histogram = histogram.drop(columns=_INVALID_LABELS)
    histogram["score_sum_labeled"] = histogram["score_sum_labeled"].fillna(0.0)  # sum over no labeled row
    for name in ("n", "n_labeled", "positives"):
        histogram[name] = histogram[name].astype("int64")
    histogram[BIN] = histogram[BIN].astype("int64")
    return histogram.sort_values([*by, BIN], kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------- metrics on bin counts (numpy)


def roc_auc_from_counts(positives: np.ndarray, negatives: np.ndarray) -> float:
    """Mann–Whitney ROC AUC from per-bin (possibly fractional) counts in ascending score order; ties 1/2."""
    positives, negatives = np.asarray(positives, float), np.asarray(negatives, float)
    total_pos, total_neg = positives.sum(), negatives.sum()
    if total_pos <= 0 or total_neg <= 0:
        return float("nan")
    below = np.cumsum(negatives) - negatives  # negatives in strictly lower bins
    return float(np.sum(positives * (below + negatives / 2)) / (total_pos * total_neg))


def average_precision_from_counts(positives: np.ndarray, negatives: np.ndarray) -> float:
    """sklearn's average precision with each bin one threshold, from per-bin counts in ascending score order."""
    positives, negatives = np.asarray(positives, float), np.asarray(negatives, float)
    total_pos = positives.sum()
    if total_pos <= 0:
        return float("nan")
    pos_desc, n_desc = positives[::-1], (positives + negatives)[::-1]
    true_pos, predicted = np.cumsum(pos_desc), np.cumsum(n_desc)
    step = pos_desc > 0  # a bin without positives adds no recall, so no term
    return float(np.sum(pos_desc[step] / total_pos * true_pos[step] / predicted[step]))


def hanley_mcneil_se(auc: float, positives: float, negatives: float) -> float:
    """Standard error of a ROC AUC (Hanley & McNeil 1982) from the numbers of positives and negatives."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    variance = (auc * (1 - auc) + (positives - 1) * (q1 - auc**2) + (negatives - 1) * (q2 - auc**2)) / (
        positives * negatives
    )
    return float(np.sqrt(max(variance, 0.0)))


def wilson_interval(successes: float, n: float, z: float) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n`` for the normal quantile ``z``."""
    p = successes / n
    denominator = 1 + z**2 / n
    center = (p + z**2 / (2 * n)) / denominator
    half = z / denominator * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return float(max(center - half, 0.0)), float(min(center + half, 1.0))


def _calibration(
    bin_index: np.ndarray, n: np.ndarray, score_sum: np.ndarray, positives: np.ndarray, bins: int, calibration_bins: int
) -> tuple[float, list[dict[str, Any]]]:
    """ECE over ``calibration_bins`` equal-width bins and the per-bin reliability table."""
    # C divides B, so score bin b = [b/B, (b+1)/B) lies inside calibration bin b*C//B.
    cal = bin_index * calibration_bins // bins
    n_j = np.bincount(cal, weights=n, minlength=calibration_bins)
    score_j = np.bincount(cal, weights=score_sum, minlength=calibration_bins)
    pos_j = np.bincount(cal, weights=positives, minlength=calibration_bins)
    ece = float(np.sum(np.abs(score_j - pos_j)) / n_j.sum())
    table = [
        {
            "bin_lower": j / calibration_bins,
            "bin_upper": (j + 1) / calibration_bins,
            "n": int(n_j[j]),
            "mean_score": float(score_j[j] / n_j[j]) if n_j[j] else None,
            "observed_rate": float(pos_j[j] / n_j[j]) if n_j[j] else None,
        }
        for j in range(calibration_bins)
    ]
    return ece, table


# ---------------------------------------------------------------- rows per group


def _row(
    basis: str,
    metric: str,
    value: float,
    counts: tuple[int, int, int],
    trusted: bool,
    interval: tuple[float, float] | None = None,
    details: dict | list | None = None,
) -> dict[str, Any]:
    """One output row (without the group columns); ``counts`` = (n_rows, positives, negatives)."""
    lower, upper = interval if interval is not None else (float("nan"), float("nan"))
    return {
        "basis": basis,
        "metric": metric,
        "value": value,
        "lower": lower,
        "upper": upper,
        "n_rows": counts[0],
        "positives": counts[1],
        "negatives": counts[2],
        "trusted": trusted,
        "details": None if details is None else json.dumps(details),
    }


def _realized_rows(
    part: pd.DataFrame, bins: int, calibration_bins: int, z: float, confidence: float, minimums: tuple[int, int]
) -> list[dict[str, Any]]:
    """Realized metrics of one group (labeled rows only); none when it has no labeled row."""
    n = part["n_labeled"].to_numpy(float)
    total = int(n.sum())
    if total == 0:
        return []
    pos = part["positives"].to_numpy(float)
    neg = n - pos
    n_pos, n_neg = int(pos.sum()), total - int(pos.sum())
    counts = (total, n_pos, n_neg)
    trusted = n_pos >= minimums[0] and n_neg >= minimums[1]
    score_sum = part["score_sum_labeled"].to_numpy(float)

    auc = roc_auc_from_counts(pos, neg)
    auc_interval = None
    if not np.isnan(auc):
        se = hanley_mcneil_se(auc, n_pos, n_neg)
        auc_interval = (max(auc - z * se, 0.0), min(auc + z * se, 1.0))
    ece, table = _calibration(part[BIN].to_numpy(int), n, score_sum, pos, bins, calibration_bins)
    return [
        _row(
            "realized",
            "roc_auc",
            auc,
            counts,
            trusted,
            auc_interval,
            {"interval": "hanley_mcneil", "confidence": confidence},
        ),
        _row("realized", "pr_auc", average_precision_from_counts(pos, neg), counts, trusted),
        _row("realized", "ece", ece, counts, trusted, details=table),
        _row(
            "realized",
            "observed_rate",
            n_pos / total,
            counts,
            trusted,
            wilson_interval(n_pos, total, z),
            {"interval": "wilson", "confidence": confidence},
        ),
        _row("realized", "mean_score", float(score_sum.sum() / total), counts, trusted),
    ]


def _estimated_rows(part: pd.DataFrame, minimums: tuple[int, int]) -> list[dict[str, Any]]:
    """CBPE metrics of one group over all its rows: each score counts as that fraction of a positive."""
    n = part["n"].to_numpy(float)
    expected_pos = part["score_sum"].to_numpy(float)
    expected_neg = np.clip(n - expected_pos, 0.0, None)  # float sums of scores of 1 can overshoot n by ulps
    total = int(n.sum())
    n_pos = int(round(expected_pos.sum()))
    n_neg = total - n_pos
    counts = (total, n_pos, n_neg)
    trusted = n_pos >= minimums[0] and n_neg >= minimums[1]
    method = {"method": "cbpe"}
    return [
        _row("estimated", "roc_auc", roc_auc_from_counts(expected_pos, expected_neg), counts, trusted, details=method),
        _row(
            "estimated",
            "pr_auc",
            average_precision_from_counts(expected_pos, expected_neg),
            counts,
            trusted,
            details=method,
        ),
        _row("estimated", "expected_rate", float(expected_pos.sum() / total), counts, trusted, details=method),
    ]


def performance_from_histogram(
    histogram: pd.DataFrame,
    by: Sequence[str],
    *,
    bins: int = 1000,
    min_positives: int = 30,
    min_negatives: int = 30,
    calibration_bins: int = 10,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Long performance rows per group: realized (labeled rows) and estimated (CBPE, all rows) metrics.

    ``histogram`` is ``score_histogram``'s output with the same ``by`` and ``bins``. Columns
    ``[*by, "basis", "metric", "value", "lower", "upper", "n_rows", "positives", "negatives",
    "trusted", "details"]``; undefined values and intervals are NaN. Groups in sorted order,
    realized rows (``REALIZED_METRICS``) before estimated ones (``ESTIMATED_METRICS``).
    """
    caller = "performance_from_histogram"
    by = _check_by(by, caller)
    _check_bins(bins, caller)
    _check_bins(calibration_bins, caller)
    if bins % calibration_bins:
        raise ValueError(
            f"{caller}: calibration_bins={calibration_bins} does not divide bins={bins}; expected a divisor"
        )
    if not 0 < confidence < 1:
        raise ValueError(f"{caller}: confidence={confidence!r}; expected a level strictly between 0 and 1")
    missing = [name for name in (*by, BIN, *HISTOGRAM_COUNTS) if name not in histogram.columns]
    if missing:
        raise ValueError(f"{caller}: histogram lacks column(s) {missing}; expected score_histogram's output")
    outside = histogram[(histogram[BIN] < 0) | (histogram[BIN] >= bins)]
    if len(outside):
        raise ValueError(
            f"{caller}: bin {int(outside[BIN].iloc[0])} is outside [0, {bins}); expected the histogram of the same bins"
        )
    if histogram.empty:
        return pd.DataFrame(columns=[*by, *PERFORMANCE_COLUMNS])
    z = float(stats.norm.ppf((1 + confidence) / 2))
    minimums = (min_positives, min_negatives)
    rows: list[dict[str, Any]] = []
    groups = histogram.groupby(by, dropna=False, sort=True) if by else [((), histogram)]
    for _, part in groups:
        part = part.sort_values(BIN, kind="stable")
        keys = {name: part[name].iloc[0] for name in by}  # from a row: keeps None, not groupby's NaN key
        realized = _realized_rows(part, bins, calibration_bins, z, confidence, minimums)
        rows += [{**keys, **row} for row in realized + _estimated_rows(part, minimums)]
    result = pd.DataFrame(rows, columns=[*by, *PERFORMANCE_COLUMNS])
    return result.astype({"value": float, "lower": float, "upper": float, "trusted": bool})
