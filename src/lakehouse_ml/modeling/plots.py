"""Report figures of a scored window: ROC, precision-recall, calibration, confusion matrix,
feature importance and an Optuna history.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot): no global figure registry, no GUI
backend, safe in Kedro's thread runner and in notebooks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve


def titled_figure(title: str, size: tuple[float, float] = (5.0, 4.5)):
    """A figure of ``size`` inches with one titled axes, laid out to fit (every report chart's frame)."""
    figure = Figure(figsize=size, layout="constrained")
    axes = figure.add_subplot()
    axes.set_title(title)
    return figure, axes


def roc_figure(labels: Any, scores: Any, roc_auc: float | None) -> Figure:
    """ROC curve with the chance diagonal."""
    figure, axes = titled_figure(f"ROC (AUC {roc_auc:.3f})" if roc_auc is not None else "ROC")
    fpr, tpr, _ = roc_curve(labels, scores)
    axes.plot(fpr, tpr, label="model")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    axes.set(xlabel="false positive rate", ylabel="true positive rate")
    axes.legend(loc="lower right")
    return figure


def pr_figure(labels: Any, scores: Any, pr_auc: float | None, threshold: float) -> Figure:
    """Precision-recall curve, the base rate and the operating point."""
    figure, axes = titled_figure(f"Precision-recall (AP {pr_auc:.3f})" if pr_auc is not None else "Precision-recall")
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    axes.plot(recall, precision, label="model")
    axes.axhline(float(np.mean(labels)), linestyle="--", color="grey", label="base rate")
    at = int(np.searchsorted(thresholds, threshold)) if len(thresholds) else 0
    if at < len(thresholds):
        axes.scatter([recall[at]], [precision[at]], color="red", zorder=3, label=f"threshold {threshold:.3f}")
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    axes.legend(loc="upper right")
    return figure


def calibration_figure(labels: Any, scores: Any, calibration_error: float | None, n_bins: int = 10) -> Figure:
    """Reliability diagram: positive rate against mean score per equal-width bin, with bin counts."""
    y, p = np.asarray(labels, dtype=float), np.asarray(scores, dtype=float)
    title = f"Calibration (ECE {calibration_error:.3f})" if calibration_error is not None else "Calibration"
    figure, axes = titled_figure(title)
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    present = np.unique(bins)
    mean_score = [p[bins == b].mean() for b in present]
    rate = [y[bins == b].mean() for b in present]
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
    axes.plot(mean_score, rate, marker="o", label="model")
    counts = axes.twinx()
    counts.bar(
        (present + 0.5) / n_bins, [int((bins == b).sum()) for b in present], width=0.8 / n_bins, alpha=0.2, color="grey"
    )
    counts.set_ylabel("rows per bin")
    axes.set(xlabel="mean predicted probability", ylabel="observed positive rate", xlim=(0, 1), ylim=(0, 1))
    axes.legend(loc="upper left")
    return figure


def confusion_figure(counts: dict[str, int], threshold: float) -> Figure:
    """2×2 confusion matrix at the operating threshold, with counts and row shares."""
    matrix = np.array(
        [[counts["true_negative"], counts["false_positive"]], [counts["false_negative"], counts["true_positive"]]]
    )
    figure, axes = titled_figure(f"Confusion matrix at threshold {threshold:.3f}", size=(4.5, 4.0))
    axes.imshow(matrix, cmap="Blues")
    totals = matrix.sum(axis=1, keepdims=True).clip(min=1)
    for (row, column), value in np.ndenumerate(matrix):
        axes.text(column, row, f"{value}\n({value / totals[row, 0]:.1%})", ha="center", va="center")
    axes.set(
        xticks=[0, 1], yticks=[0, 1], xticklabels=["predicted 0", "predicted 1"], yticklabels=["actual 0", "actual 1"]
    )
    return figure


def importance_figure(importance: dict[str, dict[str, float]], top: int = 20) -> Figure:
    """Horizontal bars of the mean importance (± std) of the ``top`` features."""
    ranked = sorted(importance.items(), key=lambda item: item[1]["mean"], reverse=True)[:top][::-1]
    figure, axes = titled_figure("Permutation importance (ROC AUC drop)", size=(7.0, 0.3 * len(ranked) + 1.5))
    axes.barh(
        [name for name, _ in ranked],
        [v["mean"] for _, v in ranked],
        xerr=[v["std"] for _, v in ranked],
        color="tab:blue",
    )
    axes.set_xlabel("mean decrease in ROC AUC when the feature is shuffled")
    return figure


def optuna_history_figure(trials: list[dict[str, Any]], metric: str = "mean validation ROC AUC") -> Figure:
    """Objective per trial (completed and pruned) and the best value so far."""
    figure, axes = titled_figure("Optuna optimisation history", size=(7.0, 4.5))
    complete = [t for t in trials if t["state"] == "COMPLETE" and t["value"] is not None]
    pruned = [t for t in trials if t["state"] == "PRUNED" and t["value"] is not None]
    axes.scatter([t["number"] for t in complete], [t["value"] for t in complete], label="complete")
    axes.scatter(
        [t["number"] for t in pruned],
        [t["value"] for t in pruned],
        marker="x",
        color="grey",
        label="pruned (last report)",
    )
    if complete:
        ordered = sorted(complete, key=lambda t: t["number"])
        axes.step(
            [t["number"] for t in ordered],
            np.maximum.accumulate([t["value"] for t in ordered]),
            where="post",
            color="red",
            label="best so far",
        )
    axes.set(xlabel="trial", ylabel=metric)
    axes.legend(loc="lower right")
    return figure
