"""Report figures from tiny inputs: each is a ``matplotlib.figure.Figure`` that renders to PNG, and
what it draws (titles, points, bar order) matches the hand-computed figures of the inputs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.figure import Figure

from lakehouse_ml.modeling.plots import (
    calibration_figure,
    confusion_figure,
    importance_figure,
    optuna_history_figure,
    pr_figure,
    roc_figure,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Same example as test_metrics: positives at 0.35, 0.7, 0.9; negatives at 0.1, 0.4, 0.8.
Y = [0, 0, 1, 0, 1, 1]
P = [0.1, 0.4, 0.35, 0.8, 0.7, 0.9]


def png_bytes(figure: Figure) -> bytes:
    assert isinstance(figure, Figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    data = buffer.getvalue()
    assert len(data) > len(PNG_MAGIC)
    assert data.startswith(PNG_MAGIC)
    return data


def test_roc_figure():
    figure = roc_figure(Y, P, roc_auc=2 / 3)
    png_bytes(figure)
    axes = figure.axes[0]
    assert axes.get_title() == "ROC (AUC 0.667)"
    model, chance = axes.lines
    # the curve runs from (0, 0) to (1, 1)
    assert (model.get_xdata()[0], model.get_ydata()[0]) == (0, 0)
    assert (model.get_xdata()[-1], model.get_ydata()[-1]) == (1, 1)
    assert list(chance.get_xdata()) == [0, 1] and list(chance.get_ydata()) == [0, 1]


def test_roc_figure_without_auc():
    figure = roc_figure(Y, P, roc_auc=None)
    png_bytes(figure)
    assert figure.axes[0].get_title() == "ROC"


def test_pr_figure_operating_point_and_base_rate():
    """At 0.5 the flagged rows are 0.7, 0.8, 0.9 (TP 2): recall 2/3, precision 2/3. Base rate 3/6."""
    figure = pr_figure(Y, P, pr_auc=34 / 45, threshold=0.5)
    png_bytes(figure)
    axes = figure.axes[0]
    assert axes.get_title() == "Precision-recall (AP 0.756)"
    (point,) = axes.collections
    np.testing.assert_allclose(point.get_offsets(), [[2 / 3, 2 / 3]])
    base_rate = axes.lines[1]
    np.testing.assert_allclose(base_rate.get_ydata(), [0.5, 0.5])


def test_pr_figure_threshold_above_every_score_has_no_operating_point():
    figure = pr_figure(Y, P, pr_auc=None, threshold=0.95)
    png_bytes(figure)
    assert figure.axes[0].get_title() == "Precision-recall"
    assert len(figure.axes[0].collections) == 0


def test_calibration_figure_points_per_bin():
    """Two bins: [0, 0.5) holds 0.1, 0.3, 0.4 (mean 0.8/3, rate 1/3), [0.5, 1] holds 0.6, 0.8, 1.0 (mean 0.8, rate 2/3)."""
    figure = calibration_figure([0, 0, 1, 1, 0, 1], [0.1, 0.3, 0.4, 0.6, 0.8, 1.0], calibration_error=0.1, n_bins=2)
    png_bytes(figure)
    axes, counts = figure.axes
    assert axes.get_title() == "Calibration (ECE 0.100)"
    model = axes.lines[1]
    np.testing.assert_allclose(model.get_xdata(), [0.8 / 3, 0.8])
    np.testing.assert_allclose(model.get_ydata(), [1 / 3, 2 / 3])
    assert [bar.get_height() for bar in counts.patches] == [3, 3]


def test_calibration_figure_without_error():
    figure = calibration_figure(Y, P, calibration_error=None)
    png_bytes(figure)
    assert figure.axes[0].get_title() == "Calibration"


def test_confusion_figure_counts_and_row_shares():
    """Row 'actual 0': TN 1, FP 2 of 3 -> 33.3%, 66.7%; row 'actual 1': FN 1, TP 2 of 3."""
    counts = {"true_negative": 1, "false_positive": 2, "false_negative": 1, "true_positive": 2}
    figure = confusion_figure(counts, threshold=0.5)
    png_bytes(figure)
    axes = figure.axes[0]
    assert axes.get_title() == "Confusion matrix at threshold 0.500"
    cells = {(text.get_position()[1], text.get_position()[0]): text.get_text() for text in axes.texts}
    assert cells == {
        (0, 0): "1\n(33.3%)",
        (0, 1): "2\n(66.7%)",
        (1, 0): "1\n(33.3%)",
        (1, 1): "2\n(66.7%)",
    }


def test_confusion_figure_empty_row_does_not_divide_by_zero():
    counts = {"true_negative": 0, "false_positive": 0, "false_negative": 3, "true_positive": 1}
    figure = confusion_figure(counts, threshold=0.2)
    png_bytes(figure)
    texts = sorted(text.get_text() for text in figure.axes[0].texts)
    assert texts == ["0\n(0.0%)", "0\n(0.0%)", "1\n(25.0%)", "3\n(75.0%)"]


IMPORTANCE = {
    "tenure": {"mean": 0.05, "std": 0.01},
    "country": {"mean": 0.001, "std": 0.002},
    "spend_30d": {"mean": 0.12, "std": 0.02},
    "plan_tier": {"mean": 0.02, "std": 0.005},
}


def _y_labels(figure: Figure) -> list[str]:
    png_bytes(figure)  # draws the figure, which fills in the categorical tick labels
    return [label.get_text() for label in figure.axes[0].get_yticklabels()]


def test_importance_figure_orders_bars_by_mean():
    """barh draws bottom-up, so the largest mean (spend_30d 0.12) is the top bar: labels from the bottom
    are country 0.001 < plan_tier 0.02 < tenure 0.05 < spend_30d 0.12."""
    figure = importance_figure(IMPORTANCE)
    assert _y_labels(figure) == ["country", "plan_tier", "tenure", "spend_30d"]
    assert [bar.get_width() for bar in figure.axes[0].patches] == pytest.approx([0.001, 0.02, 0.05, 0.12])


def test_importance_figure_keeps_top_features():
    assert _y_labels(importance_figure(IMPORTANCE, top=2)) == ["tenure", "spend_30d"]


def test_optuna_history_figure_complete_pruned_and_best_so_far():
    """Complete 0 -> 0.70, 2 -> 0.65, 3 -> 0.80: best so far 0.70, 0.70, 0.80. Trial 1 pruned at 0.72;
    trial 4 failed (no value) and trial 5 pruned before reporting: neither is drawn."""
    trials = [
        {"number": 0, "state": "COMPLETE", "value": 0.70},
        {"number": 1, "state": "PRUNED", "value": 0.72},
        {"number": 2, "state": "COMPLETE", "value": 0.65},
        {"number": 3, "state": "COMPLETE", "value": 0.80},
        {"number": 4, "state": "FAIL", "value": None},
        {"number": 5, "state": "PRUNED", "value": None},
    ]
    figure = optuna_history_figure(trials)
    png_bytes(figure)
    axes = figure.axes[0]
    complete, pruned = axes.collections
    np.testing.assert_allclose(complete.get_offsets(), [[0, 0.70], [2, 0.65], [3, 0.80]])
    np.testing.assert_allclose(pruned.get_offsets(), [[1, 0.72]])
    (best,) = axes.lines
    np.testing.assert_allclose(best.get_xdata(), [0, 2, 3])
    np.testing.assert_allclose(best.get_ydata(), [0.70, 0.70, 0.80])
    assert axes.get_ylabel() == "mean validation ROC AUC"


def test_optuna_history_figure_best_so_far_follows_trial_number():
    """Trials listed out of order: the line still runs by trial number (1 -> 0.6, 2 -> 0.5 keeps 0.6)."""
    trials = [{"number": 2, "state": "COMPLETE", "value": 0.5}, {"number": 1, "state": "COMPLETE", "value": 0.6}]
    figure = optuna_history_figure(trials)
    png_bytes(figure)
    (best,) = figure.axes[0].lines
    np.testing.assert_allclose(best.get_xdata(), [1, 2])
    np.testing.assert_allclose(best.get_ydata(), [0.6, 0.6])


def test_optuna_history_figure_empty_trials():
    figure = optuna_history_figure([])
    png_bytes(figure)
    axes = figure.axes[0]
    assert len(axes.lines) == 0
    assert all(len(collection.get_offsets()) == 0 for collection in axes.collections)


def test_optuna_history_figure_only_pruned_trials():
    figure = optuna_history_figure([{"number": 0, "state": "PRUNED", "value": 0.61}], metric="AUC")
    png_bytes(figure)
    axes = figure.axes[0]
    assert len(axes.lines) == 0  # no completed trial, no best-so-far line
    np.testing.assert_allclose(axes.collections[1].get_offsets(), [[0, 0.61]])
    assert axes.get_ylabel() == "AUC"
