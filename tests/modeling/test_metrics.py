"""Binary-classification metrics on tiny hand-made arrays; every expected value is worked out by hand.

The shared example (``Y``/``P``) is six rows, three of each class::

    score  0.1  0.4  0.35  0.8  0.7  0.9
    label   0    0    1     0    1    1

Positives score 0.35, 0.7, 0.9; negatives 0.1, 0.4, 0.8.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from lakehouse_ml.modeling.metrics import (
    binary_metrics,
    calibration_error,
    choose_threshold,
    confusion_counts,
    flat_slice_metrics,
    metric_key,
    slice_metrics,
    slice_specs,
    slice_values,
    threshold_metrics,
)

Y = [0, 0, 1, 0, 1, 1]
P = [0.1, 0.4, 0.35, 0.8, 0.7, 0.9]


# ---------------------------------------------------------------- calibration_error


def test_calibration_error_by_hand_two_bins():
    """Bins [0, 0.5) and [0.5, 1].

    bin 0: scores 0.1, 0.3, 0.4 -> mean 0.8/3 = 0.2667; labels 0, 0, 1 -> rate 1/3; |diff| = 1/15
    bin 1: scores 0.6, 0.8, 1.0 -> mean 0.8;           labels 1, 0, 1 -> rate 2/3; |diff| = 2/15
    ECE = 3/6 * 1/15 + 3/6 * 2/15 = 0.1
    (per-row |score - label| would average 0.4833: the bins pool before taking the difference)
    """
    labels = [0, 0, 1, 1, 0, 1]
    scores = [0.1, 0.3, 0.4, 0.6, 0.8, 1.0]
    assert calibration_error(labels, scores, n_bins=2) == pytest.approx(0.1)


def test_calibration_error_three_bins():
    """Bins [0, 1/3), [1/3, 2/3), [2/3, 1].

    bin 0: 0.2, 0.2 vs labels 0, 0 -> |0.2 - 0| = 0.2, weight 2/6
    bin 1: 0.4, 0.6 vs labels 1, 0 -> |0.5 - 0.5| = 0,  weight 2/6
    bin 2: 0.9, 0.9 vs labels 1, 1 -> |0.9 - 1| = 0.1,  weight 2/6
    ECE = (0.4 + 0 + 0.2) / 6 = 0.1
    """
    labels = [0, 0, 1, 0, 1, 1]
    scores = [0.2, 0.2, 0.4, 0.6, 0.9, 0.9]
    assert calibration_error(labels, scores, n_bins=3) == pytest.approx(0.1)


def test_calibration_error_score_one_lands_in_last_bin():
    """0.9 and 1.0 share the last bin [0.5, 1]: mean 0.95, rate 1/2 -> ECE 0.45.

    Were 1.0 a bin of its own: 0.5 * |0.9 - 1| + 0.5 * |1.0 - 0| = 0.55.
    """
    assert calibration_error([1, 0], [0.9, 1.0], n_bins=2) == pytest.approx(0.45)


def test_calibration_error_perfectly_calibrated_is_zero():
    """Four rows at 0.25 with one positive (rate 1/4), four at 0.75 with three (rate 3/4)."""
    labels = [1, 0, 0, 0, 1, 1, 1, 0]
    scores = [0.25] * 4 + [0.75] * 4
    assert calibration_error(labels, scores) == pytest.approx(0.0, abs=1e-12)


def test_calibration_error_empty_is_nan():
    assert math.isnan(calibration_error([], []))


# ---------------------------------------------------------------- threshold_metrics / confusion_counts

# labels 0    0    1    1    0    1
# scores 0.1  0.5  0.5  0.7  0.8  0.3     threshold 0.5, score >= 0.5 is positive
# pred   0    1    1    1    1    0       -> TN 1 (row 0), FP 2 (rows 1, 4), FN 1 (row 5), TP 2 (rows 2, 3)
TL = [0, 0, 1, 1, 0, 1]
TS = [0.1, 0.5, 0.5, 0.7, 0.8, 0.3]


def test_threshold_metrics_at_threshold_inclusive():
    """precision 2/4, recall 2/3, F1 = 2 * 1/2 * 2/3 / (1/2 + 2/3) = (2/3) / (7/6) = 4/7, 4 of 6 flagged."""
    got = threshold_metrics(TL, TS, 0.5)
    assert got == pytest.approx({"precision": 0.5, "recall": 2 / 3, "f1": 4 / 7, "predicted_positive_rate": 4 / 6})


def test_confusion_counts_at_threshold_inclusive():
    assert confusion_counts(TL, TS, 0.5) == {
        "true_negative": 1,
        "false_positive": 2,
        "false_negative": 1,
        "true_positive": 2,
    }


def test_threshold_metrics_no_predicted_positives():
    """Nothing scores >= 0.9: precision is 0 (not a division by zero), recall 0, F1 0, nothing flagged."""
    got = threshold_metrics(TL, TS, 0.9)
    assert got == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "predicted_positive_rate": 0.0}
    assert confusion_counts(TL, TS, 0.9) == {
        "true_negative": 3,
        "false_positive": 0,
        "false_negative": 3,
        "true_positive": 0,
    }


def test_threshold_metrics_no_positive_labels():
    """All negatives, two flagged (0.6, 0.9 >= 0.5): precision 0/2, recall 0 (no positives to find)."""
    got = threshold_metrics([0, 0, 0], [0.1, 0.6, 0.9], 0.5)
    assert got == pytest.approx({"precision": 0.0, "recall": 0.0, "f1": 0.0, "predicted_positive_rate": 2 / 3})


# ---------------------------------------------------------------- binary_metrics


def test_binary_metrics_by_hand():
    """ROC AUC: concordant (positive, negative) pairs, positive scored higher:
        0.35 > {0.1}            -> 1
        0.7  > {0.1, 0.4}       -> 2
        0.9  > {0.1, 0.4, 0.8}  -> 3          6 of 3 * 3 = 9 pairs -> 2/3
    PR AUC (average precision), rows by descending score 0.9(1) 0.8(0) 0.7(1) 0.4(0) 0.35(1) 0.1(0):
        precision at each positive 1/1, 2/3, 3/5, each a recall step of 1/3 -> (1 + 2/3 + 3/5) / 3 = 34/45
    log loss: -(ln 0.9 + ln 0.6 + ln 0.35 + ln 0.2 + ln 0.7 + ln 0.9) / 6 = 0.6229
    Brier: (0.1² + 0.4² + 0.65² + 0.8² + 0.3² + 0.1²) / 6 = 1.3325 / 6 = 0.2221
    ECE (10 bins, every score alone in its bin): mean |p - y| = (0.1+0.4+0.65+0.8+0.3+0.1) / 6 = 2.35 / 6
    At 0.5: flagged 0.8, 0.7, 0.9 -> TP 2: precision 2/3, recall 2/3, F1 2/3, rate 3/6.
    """
    got = binary_metrics(Y, P, 0.5)
    log_loss = -(math.log(0.9) + math.log(0.6) + math.log(0.35) + math.log(0.2) + math.log(0.7) + math.log(0.9)) / 6
    assert log_loss == pytest.approx(0.6229, abs=1e-4)
    expected = {
        "rows": 6.0,
        "positives": 3.0,
        "positive_rate": 0.5,
        "mean_score": 3.25 / 6,
        "roc_auc": 2 / 3,
        "pr_auc": 34 / 45,
        "log_loss": log_loss,
        "brier": 1.3325 / 6,
        "calibration_error": 2.35 / 6,
        "precision": 2 / 3,
        "recall": 2 / 3,
        "f1": 2 / 3,
        "predicted_positive_rate": 0.5,
        "threshold": 0.5,
    }
    assert set(got) == set(expected)
    assert got == pytest.approx(expected)


def test_binary_metrics_clips_scores_into_unit_interval():
    """1.3 and -0.2 are read as 1.0 and 0.0: Brier ((1-1)² + (0-0)²) / 2 = 0, mean score 0.5."""
    got = binary_metrics([1, 0], [1.3, -0.2], 0.5)
    assert got["brier"] == pytest.approx(0.0)
    assert got["mean_score"] == pytest.approx(0.5)
    assert math.isfinite(got["log_loss"])


def test_binary_metrics_single_class_leaves_out_ranking_metrics():
    """Negatives only at 0.1, 0.2, 0.4: log loss -(ln 0.9 + ln 0.8 + ln 0.6)/3, Brier (0.01+0.04+0.16)/3 = 0.07."""
    got = binary_metrics([0, 0, 0], [0.1, 0.2, 0.4], 0.3)
    assert "roc_auc" not in got and "pr_auc" not in got
    assert got["rows"] == 3.0 and got["positives"] == 0.0
    assert got["log_loss"] == pytest.approx(-(math.log(0.9) + math.log(0.8) + math.log(0.6)) / 3)
    assert got["brier"] == pytest.approx(0.07)
    # flagged: 0.4 only, a false positive
    assert got["precision"] == 0.0 and got["predicted_positive_rate"] == pytest.approx(1 / 3)
    assert not any(isinstance(v, float) and math.isnan(v) for v in got.values())


def test_binary_metrics_empty_gives_counts_only():
    assert binary_metrics([], [], 0.5) == {"rows": 0.0, "positives": 0.0}


# ---------------------------------------------------------------- choose_threshold

# Candidate thresholds are the distinct scores of Y/P; at t, score >= t is positive:
#   t     flagged  TP  precision  recall  F1
#   0.1     6      3    3/6=0.5    1      2/3
#   0.35    5      3    3/5=0.6    1      1.2/1.6 = 0.75   <- best F1
#   0.4     4      2    2/4=0.5    2/3    4/7
#   0.7     3      2    2/3        2/3    2/3
#   0.8     2      1    1/2        1/3    0.4
#   0.9     1      1    1          1/3    0.5


def test_choose_threshold_max_f1():
    got = choose_threshold(Y, P, {"name": "max_f1"})
    assert got["strategy"] == "max_f1"
    assert got["threshold"] == pytest.approx(0.35)
    assert got["f1"] == pytest.approx(0.75)
    assert got["precision"] == pytest.approx(0.6) and got["recall"] == pytest.approx(1.0)
    assert got["predicted_positive_rate"] == pytest.approx(5 / 6)


def test_choose_threshold_defaults_to_max_f1():
    assert choose_threshold(Y, P, {})["threshold"] == pytest.approx(0.35)


@pytest.mark.parametrize(
    ("value", "threshold", "recall"),
    [
        (0.6, 0.7, 2 / 3),  # recall >= 0.6 at 0.1, 0.35, 0.4, 0.7 -> highest 0.7
        (1.0, 0.35, 1.0),  # recall 1 at 0.1 and 0.35 -> highest 0.35
        (0.3, 0.9, 1 / 3),  # every threshold reaches 1/3 -> the top score
    ],
)
def test_choose_threshold_min_recall_picks_highest_threshold(value, threshold, recall):
    got = choose_threshold(Y, P, {"name": "min_recall", "value": value})
    assert got["strategy"] == "min_recall"
    assert got["threshold"] == pytest.approx(threshold)
    assert got["recall"] == pytest.approx(recall)


@pytest.mark.parametrize(
    ("value", "threshold", "precision"),
    [
        (0.55, 0.35, 0.6),  # precision >= 0.55 at 0.35, 0.7, 0.9 -> lowest 0.35
        (0.65, 0.7, 2 / 3),  # at 0.7 and 0.9 -> lowest 0.7 (0.8 in between is only 1/2)
        (1.0, 0.9, 1.0),  # only the top score
    ],
)
def test_choose_threshold_min_precision_picks_lowest_threshold(value, threshold, precision):
    got = choose_threshold(Y, P, {"name": "min_precision", "value": value})
    assert got["strategy"] == "min_precision"
    assert got["threshold"] == pytest.approx(threshold)
    assert got["precision"] == pytest.approx(precision)


def test_choose_threshold_min_precision_unreachable():
    """labels 1 0 1 0 at 0.2 0.4 0.6 0.8: precision 2/4, 1/3, 1/2, 0 -> never 0.6."""
    with pytest.raises(ValueError, match=r"no threshold reaches precision 0\.6"):
        choose_threshold([1, 0, 1, 0], [0.2, 0.4, 0.6, 0.8], {"name": "min_precision", "value": 0.6})


@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0, 0]])
def test_choose_threshold_single_class_raises(labels):
    with pytest.raises(ValueError, match="single class"):
        choose_threshold(labels, [0.2, 0.5, 0.8], {"name": "max_f1"})


def test_choose_threshold_unknown_strategy_names_the_choices():
    with pytest.raises(ValueError, match=r"'youden'.*max_f1, min_recall or min_precision"):
        choose_threshold(Y, P, {"name": "youden"})


# ---------------------------------------------------------------- slice_values


def test_slice_values_plain_column_nulls_are_unknown():
    frame = pd.DataFrame({"country": ["FR", None, "DE", np.nan]}, index=[10, 11, 12, 13])
    got = slice_values(frame, "country")
    assert got.tolist() == ["FR", "unknown", "DE", "unknown"]
    assert got.index.tolist() == [10, 11, 12, 13]
    assert slice_values(frame, {"column": "country"}).tolist() == got.tolist()


def test_slice_values_buckets():
    """Edges 0, 90, 180, 365: [0, 90) [90, 180) [180, 365) [365, inf); below 0 goes to the first bucket."""
    frame = pd.DataFrame({"tenure_days": [0, 89.9, 90, 180, 364.99, 365, 1000, -5, np.nan]}, index=list("abcdefghi"))
    got = slice_values(frame, {"column": "tenure_days", "edges": [0, 90, 180, 365]})
    assert got.tolist() == [
        "0_90", "0_90", "90_180", "180_365", "180_365", "365_plus", "365_plus", "0_90", "unknown",
    ]  # fmt: skip
    assert got.index.tolist() == list("abcdefghi")


def test_slice_values_buckets_non_numeric_is_unknown():
    frame = pd.DataFrame({"tenure_days": ["12", "n/a", None, "400"]})
    got = slice_values(frame, {"column": "tenure_days", "edges": [0, 90, 180, 365]})
    assert got.tolist() == ["0_90", "unknown", "unknown", "365_plus"]


# ---------------------------------------------------------------- slice_specs


INPUTS = ["customer_activity__orders_30d", "customer_profile__country", "tenure_days"]


def test_slice_specs_normalises_names_and_buckets():
    got = slice_specs(
        {"country": "customer_profile__country", "tenure": {"column": "tenure_days", "edges": [0, "90", 180]}}, INPUTS
    )
    assert got == {
        "country": {"column": "customer_profile__country"},
        "tenure": {"column": "tenure_days", "edges": [0.0, 90.0, 180.0]},
    }


@pytest.mark.parametrize("declared", [None, {}, {"country": None, "tenure": None}])
def test_slice_specs_none_an_empty_mapping_or_every_slice_removed_means_no_slices(declared):
    assert slice_specs(declared, INPUTS) == {}


def test_slice_specs_leaves_out_a_slice_over_an_absent_input_with_a_warning(caplog):
    """Orders only: the profile table is disabled, so its columns are not inputs; the loop runs on."""
    got = slice_specs(
        {"country": "customer_profile__country", "orders": {"column": "customer_activity__orders_30d", "edges": [1]}},
        ["customer_activity__orders_30d"],
    )
    assert got == {"orders": {"column": "customer_activity__orders_30d", "edges": [1.0]}}
    assert "slice 'country' left out: 'customer_profile__country' is not a model input here" in caplog.text
    assert "training.slices.country: null" in caplog.text


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        (
            {"tenure": {"column": "tenure_days", "edges": [90, 0]}},
            "training.slices.tenure.edges: expected a non-empty list of strictly ascending numbers, got [90, 0]",
        ),
        ({"tenure": {"column": "tenure_days", "edges": []}}, "training.slices.tenure.edges: expected a non-empty list"),
        ({"tenure": {"column": "tenure_days", "edges": ["a"]}}, "training.slices.tenure.edges: expected"),
        (
            {"tenure": {"columns": "tenure_days"}},
            "training.slices.tenure: expected a model input's name or {column: <input>, edges:",
        ),
        ({"tenure": 3}, "training.slices.tenure: expected a model input's name"),
    ],
)
def test_slice_specs_rejects_a_malformed_slice_naming_the_setting(declared, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        slice_specs(declared, INPUTS)


# ---------------------------------------------------------------- slice_metrics / flat_slice_metrics


def _slice_frame() -> pd.DataFrame:
    """plan: 'Premium Plus/EU' = the Y/P example (6 rows, both classes), 'basic' = 2 rows of both classes,
    'free' = 4 negatives. tenure: the first 6 rows under 90 days, the last 6 at 90 or more."""
    return pd.DataFrame(
        {
            "label": [*Y, 1, 0, 0, 0, 0, 0],
            "score": [*P, 0.6, 0.3, 0.2, 0.1, 0.3, 0.4],
            "plan": ["Premium Plus/EU"] * 6 + ["basic"] * 2 + ["free"] * 4,
            "tenure": [10, 20, 30, 40, 50, 60, 100, 200, 300, 400, 500, 600],
        }
    )


SLICES = {"plan": "plan", "tenure (days)": {"column": "tenure", "edges": [0, 90]}}


def test_slice_metrics_skips_small_and_single_class_slices():
    frame = _slice_frame()
    report = slice_metrics(frame, "label", "score", SLICES, threshold=0.5, min_rows=4)
    assert set(report) == {"plan", "tenure (days)"}
    plan = report["plan"]
    assert list(plan) == ["Premium Plus/EU", "basic", "free"]  # sorted values
    assert plan["basic"] == {"rows": 2, "positives": 1, "skipped": "fewer than 4 rows"}
    assert plan["free"] == {"rows": 4, "positives": 0, "skipped": "a single class"}
    measured = plan["Premium Plus/EU"]
    assert measured["rows"] == 6 and measured["positives"] == 3 and "skipped" not in measured
    assert measured["metrics"] == binary_metrics(Y, P, 0.5)
    assert measured["metrics"]["roc_auc"] == pytest.approx(2 / 3)  # the hand count above


def test_slice_metrics_bucket_slice_matches_binary_metrics_on_its_rows():
    """90_plus: labels 1 0 0 0 0 0 at 0.6 0.3 0.2 0.1 0.3 0.4 -> the positive outranks all 5 negatives."""
    frame = _slice_frame()
    report = slice_metrics(frame, "label", "score", SLICES, threshold=0.5, min_rows=4)
    tenure = report["tenure (days)"]
    assert list(tenure) == ["0_90", "90_plus"]
    rows = frame[frame["tenure"] >= 90]
    assert tenure["90_plus"]["rows"] == 6 and tenure["90_plus"]["positives"] == 1
    assert tenure["90_plus"]["metrics"] == binary_metrics(rows["label"], rows["score"], 0.5)
    assert tenure["90_plus"]["metrics"]["roc_auc"] == pytest.approx(1.0)


def test_slice_metrics_min_rows_comes_before_single_class():
    frame = pd.DataFrame({"label": [0, 0], "score": [0.1, 0.2], "s": ["x", "x"]})
    report = slice_metrics(frame, "label", "score", {"s": "s"}, threshold=0.5, min_rows=3)
    assert report == {"s": {"x": {"rows": 2, "positives": 0, "skipped": "fewer than 3 rows"}}}


def test_flat_slice_metrics_names():
    report = slice_metrics(_slice_frame(), "label", "score", SLICES, threshold=0.5, min_rows=4)
    flat = flat_slice_metrics(report, ["roc_auc", "pr_auc", "rows"])
    assert flat == pytest.approx(
        {
            "roc_auc__plan_Premium_Plus_EU": 2 / 3,
            "pr_auc__plan_Premium_Plus_EU": 34 / 45,
            "rows__plan_Premium_Plus_EU": 6.0,
            # 0_90 holds the same six rows as Premium Plus/EU
            "roc_auc__tenure_days_0_90": 2 / 3,
            "pr_auc__tenure_days_0_90": 34 / 45,
            "rows__tenure_days_0_90": 6.0,
            # 90_plus: one positive at 0.6 above every negative -> AUC 1, AP 1
            "roc_auc__tenure_days_90_plus": 1.0,
            "pr_auc__tenure_days_90_plus": 1.0,
            "rows__tenure_days_90_plus": 6.0,
        }
    )
    # skipped values (basic, free) give no figure; names hold MLflow-safe characters only
    assert all("=" not in name and pd.Series([name]).str.fullmatch(r"[A-Za-z0-9_.-]+").all() for name in flat)


def test_flat_slice_metrics_ignores_metrics_not_measured():
    report = {
        "plan": {
            "a": {"rows": 6, "positives": 3, "metrics": {"roc_auc": 0.7}},
            "b": {"rows": 1, "positives": 0, "skipped": "x"},
        }
    }
    assert flat_slice_metrics(report, ["roc_auc", "pr_auc"]) == {"roc_auc__plan_a": 0.7}


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("Premium Plus/EU", "Premium_Plus_EU"),
        ("a=b", "a_b"),
        ("tenure (days)", "tenure_days"),
        ("0.5_1-x", "0.5_1-x"),
        ("///", "unknown"),
        (3, "3"),
    ],
)
def test_metric_key(text, key):
    assert metric_key(text) == key


def test_flat_slice_metrics_distinct_values_never_share_a_name():
    """'EU/West' and 'EU West' both reduce to 'EU_West': each keeps its own figure, hash-suffixed."""
    report = {
        "c": {
            "EU/West": {"rows": 4, "positives": 2, "metrics": {"roc_auc": 1.0}},
            "EU West": {"rows": 4, "positives": 2, "metrics": {"roc_auc": 0.25}},
            "DE": {"rows": 4, "positives": 2, "metrics": {"roc_auc": 0.5}},
        }
    }
    flat = flat_slice_metrics(report, ["roc_auc"])
    assert len(flat) == 3 and sorted(flat.values()) == [0.25, 0.5, 1.0]
    assert flat["roc_auc__c_DE"] == 0.5  # no collision, no suffix
    assert all(name.startswith("roc_auc__c_EU_West_") for name in flat if "EU" in name)


@pytest.mark.parametrize(
    "strategy", [{"name": "min_recall", "value": 80}, {"name": "min_recall"}, {"name": "min_precision", "value": -0.1}]
)
def test_choose_threshold_rejects_targets_outside_zero_one(strategy):
    with pytest.raises(ValueError, match="between 0 and 1"):
        choose_threshold([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8], strategy)
