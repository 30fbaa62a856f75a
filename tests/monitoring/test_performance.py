"""Performance metrics from score histograms: a hand-worked case, sklearn parity, CBPE, trust and groups.

Hand-made window (default 1000 bins, 10 calibration bins), eight labeled rows and two unlabeled:

    score  0.1 0.2 0.2 0.4 0.6 0.8 0.8 0.9 | 0.5  0.7
    label   0   0   1   0   1   1   0   1  | --   --

Realized (P = 4 positives, N = 4 negatives):
* ROC AUC: each positive scores the negatives below it, ties 1/2: 0.2 -> 1 + 1/2, 0.6 -> 3,
  0.8 -> 3 + 1/2, 0.9 -> 4; (1.5 + 3 + 3.5 + 4) / 16 = 12/16 = 0.75.
  Hanley-McNeil: Q1 = 0.75/1.25 = 0.6, Q2 = 2 * 0.5625/1.75 = 0.642857;
  SE² = (0.1875 + 3 * 0.0375 + 3 * 0.080357) / 16 = 0.541071/16, SE = 0.183894;
  0.75 ± 1.959964 * SE = [0.389574, 1.110426], the upper end clipped to 1.
* AP, thresholds from the top: 0.9 -> precision 1/1, 0.8 -> 2/3, 0.6 -> 3/4, 0.4 -> no new
  positive, 0.2 -> 4/7; each new positive adds recall 1/4:
  (1 + 2/3 + 3/4 + 4/7) / 4 = 251/336.
* ECE = sum over calibration bins of |score sum - positives| / 8:
  [0.1,0.2) |0.1-0| + [0.2,0.3) |0.4-1| + [0.4,0.5) |0.4-0| + [0.6,0.7) |0.6-1| + [0.8,0.9) |1.6-1|
  + [0.9,1] |0.9-1| = 0.1 + 0.6 + 0.4 + 0.4 + 0.6 + 0.1 = 2.2; 2.2/8 = 0.275.
* observed_rate 4/8 = 0.5; mean_score 4.0/8 = 0.5.
Estimated (CBPE, all 10 rows; a bin's expected positives = its score sum):
* expected_rate = (4.0 + 0.5 + 0.7)/10 = 0.52; expected positives 5.2 -> 5, negatives 4.8 -> 5.
* ROC AUC = sum_b pos_b * (neg below b + neg_b/2) / (5.2 * 4.8), bins ascending (pos, neg):
  0.1 (.1,.9): .1*(0+.45)=.045; 0.2 (.4,1.6): .4*(.9+.8)=.68; 0.4 (.4,.6): .4*(2.5+.3)=1.12;
  0.5 (.5,.5): .5*(3.1+.25)=1.675; 0.6 (.6,.4): .6*(3.6+.2)=2.28; 0.7 (.7,.3): .7*(4.0+.15)=2.905;
  0.8 (1.6,.4): 1.6*(4.3+.2)=7.2; 0.9 (.9,.1): .9*(4.7+.05)=4.275; sum 20.18 / 24.96.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from lakehouse_ml.monitoring.performance import (
    PERFORMANCE_COLUMNS,
    average_precision_from_counts,
    performance_from_histogram,
    roc_auc_from_counts,
    score_histogram,
)

HAND_SCORES = [0.1, 0.2, 0.2, 0.4, 0.6, 0.8, 0.8, 0.9, 0.5, 0.7]
HAND_LABELS = [0, 0, 1, 0, 1, 1, 0, 1, None, None]
SCHEMA = "window string, country string, probability double, label int"


def frame(spark, windows, countries, scores, labels):
    """A scored frame with the given columns (None as null)."""
    rows = [
        (w, c, None if s is None else float(s), None if y is None else int(y))
        for w, c, s, y in zip(windows, countries, scores, labels, strict=True)
    ]
    return spark.createDataFrame(rows, SCHEMA)


def hand_frame(spark):
    """The hand-made window of the module docstring, plus one null score (dropped)."""
    scores, labels = [*HAND_SCORES, None], [*HAND_LABELS, 1]
    return frame(spark, ["w1"] * 11, ["de"] * 11, scores, labels)


def metric(result: pd.DataFrame, basis: str, name: str, **group) -> pd.Series:
    """The one row of ``basis``/``name`` (in the group given by ``group``)."""
    mask = (result["basis"] == basis) & (result["metric"] == name)
    for column, value in group.items():
        mask &= result[column] == value
    rows = result[mask]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def grid_data(seed: int, n: int) -> tuple[np.ndarray, np.random.Generator]:
    """``n`` scores on the 1000-bin grid (k/1000, k < 1000) and the generator that drew them."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 1000, size=n) / 1000, rng


# ---------------------------------------------------------------- histogram and the hand-worked case


def test_histogram_counts_rows_labels_positives_and_score_sums_per_bin(spark):
    histogram = score_histogram(hand_frame(spark), ["window"])

    assert histogram.columns.tolist() == [
        "window",
        "bin",
        "n",
        "n_labeled",
        "positives",
        "score_sum",
        "score_sum_labeled",
    ]
    assert histogram["bin"].tolist() == [100, 200, 400, 500, 600, 700, 800, 900]  # null score dropped
    assert histogram["n"].tolist() == [1, 2, 1, 1, 1, 1, 2, 1]
    assert histogram["n_labeled"].tolist() == [1, 2, 1, 0, 1, 0, 2, 1]
    assert histogram["positives"].tolist() == [0, 1, 0, 0, 1, 0, 1, 1]
    assert histogram["score_sum"].tolist() == pytest.approx([0.1, 0.4, 0.4, 0.5, 0.6, 0.7, 1.6, 0.9])
    assert histogram["score_sum_labeled"].tolist() == pytest.approx([0.1, 0.4, 0.4, 0.0, 0.6, 0.0, 1.6, 0.9])


def test_hand_made_window_realized_and_estimated_metrics(spark):
    result = performance_from_histogram(
        score_histogram(hand_frame(spark), ["window"]), ["window"], min_positives=4, min_negatives=4
    )
    assert result.columns.tolist() == ["window", *PERFORMANCE_COLUMNS]
    assert list(zip(result["basis"], result["metric"])) == [
        ("realized", "roc_auc"),
        ("realized", "pr_auc"),
        ("realized", "ece"),
        ("realized", "observed_rate"),
        ("realized", "mean_score"),
        ("estimated", "roc_auc"),
        ("estimated", "pr_auc"),
        ("estimated", "expected_rate"),
    ]

    auc = metric(result, "realized", "roc_auc")
    assert auc["value"] == pytest.approx(0.75)
    assert (auc["lower"], auc["upper"]) == (pytest.approx(0.389574, abs=1e-6), 1.0)
    assert (auc["n_rows"], auc["positives"], auc["negatives"], auc["trusted"]) == (8, 4, 4, True)
    assert metric(result, "realized", "pr_auc")["value"] == pytest.approx(251 / 336)

    ece = metric(result, "realized", "ece")
    assert ece["value"] == pytest.approx(0.275)
    table = json.loads(ece["details"])
    assert [b["n"] for b in table] == [0, 1, 2, 0, 1, 0, 1, 0, 2, 1]
    assert table[2] == {
        "bin_lower": 0.2,
        "bin_upper": 0.3,
        "n": 2,
        "mean_score": pytest.approx(0.2),
        "observed_rate": 0.5,
    }
    assert table[0]["mean_score"] is None and table[0]["observed_rate"] is None

    rate = metric(result, "realized", "observed_rate")
    wilson = stats.binomtest(4, 8).proportion_ci(0.95, method="wilson")
    assert (rate["value"], rate["lower"], rate["upper"]) == (0.5, pytest.approx(wilson.low), pytest.approx(wilson.high))
    assert metric(result, "realized", "mean_score")["value"] == pytest.approx(0.5)

    estimated = metric(result, "estimated", "roc_auc")
    assert estimated["value"] == pytest.approx(20.18 / 24.96)
    assert np.isnan(estimated["lower"]) and np.isnan(estimated["upper"])
    assert (estimated["n_rows"], estimated["positives"], estimated["negatives"], estimated["trusted"]) == (
        10,
        5,
        5,
        True,
    )
    assert metric(result, "estimated", "expected_rate")["value"] == pytest.approx(0.52)


def test_the_hand_made_metrics_match_sklearn():
    # Bin counts of the hand-made labeled rows (ascending score), against sklearn on the rows.
    positives, negatives = np.array([0, 1, 0, 1, 1, 1]), np.array([1, 1, 1, 0, 1, 0])
    scores, labels = HAND_SCORES[:8], HAND_LABELS[:8]
    assert roc_auc_from_counts(positives, negatives) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert average_precision_from_counts(positives, negatives) == pytest.approx(
        average_precision_score(labels, scores), abs=1e-12
    )


# ---------------------------------------------------------------- parity with sklearn


def test_realized_metrics_equal_sklearn_on_grid_scores(spark):
    scores, rng = grid_data(seed=7, n=3000)
    labels = (rng.random(3000) < 0.2 + 0.6 * scores).astype(int).tolist()
    unlabeled = rng.random(3000) < 0.25
    labels = [None if u else y for u, y in zip(unlabeled, labels, strict=True)]
    windows = rng.choice(["w1", "w2"], size=3000).tolist()
    result = performance_from_histogram(
        score_histogram(frame(spark, windows, ["de"] * 3000, scores, labels), ["window"]), ["window"]
    )

    data = pd.DataFrame({"window": windows, "score": scores, "label": labels})
    for window, rows in data.groupby("window"):
        labeled = rows.dropna(subset=["label"])
        y, s = labeled["label"].astype(int), labeled["score"]
        assert metric(result, "realized", "roc_auc", window=window)["value"] == pytest.approx(
            roc_auc_score(y, s), abs=1e-9
        )
        assert metric(result, "realized", "pr_auc", window=window)["value"] == pytest.approx(
            average_precision_score(y, s), abs=1e-9
        )
        # ECE straight from the rows: per tenth of the score, |sum of scores - positives| / n.
        tenth = np.floor(s * 10).clip(upper=9)
        sums = labeled.assign(tenth=tenth).groupby("tenth")[["score", "label"]].sum()
        ece = (sums["score"] - sums["label"]).abs().sum() / len(labeled)
        assert metric(result, "realized", "ece", window=window)["value"] == pytest.approx(ece, abs=1e-9)
        # CBPE = sklearn with each row split into a positive of weight p and a negative of weight 1 - p.
        both_y = np.r_[np.ones(len(rows)), np.zeros(len(rows))]
        both_s, weight = np.r_[rows["score"], rows["score"]], np.r_[rows["score"], 1 - rows["score"]]
        assert metric(result, "estimated", "roc_auc", window=window)["value"] == pytest.approx(
            roc_auc_score(both_y, both_s, sample_weight=weight), abs=1e-9
        )
        assert metric(result, "estimated", "pr_auc", window=window)["value"] == pytest.approx(
            average_precision_score(both_y, both_s, sample_weight=weight), abs=1e-9
        )


def test_cbpe_estimate_of_a_calibrated_model_lies_within_the_realized_interval(spark):
    # Labels drawn as Bernoulli(score): the scores are calibrated by construction.
    scores, rng = grid_data(seed=11, n=20_000)
    labels = (rng.random(20_000) < scores).astype(int).tolist()
    histogram = score_histogram(frame(spark, ["w1"] * 20_000, ["de"] * 20_000, scores, labels), ["window"])
    result = performance_from_histogram(histogram, ["window"])

    realized = metric(result, "realized", "roc_auc")
    estimated = metric(result, "estimated", "roc_auc")
    assert realized["lower"] <= estimated["value"] <= realized["upper"]
    assert realized["upper"] - realized["lower"] < 0.02  # a tight interval, so the check means something
    rate = metric(result, "realized", "observed_rate")
    assert rate["lower"] <= metric(result, "estimated", "expected_rate")["value"] <= rate["upper"]
    assert abs(metric(result, "estimated", "pr_auc")["value"] - metric(result, "realized", "pr_auc")["value"]) < 0.02
    assert metric(result, "realized", "ece")["value"] < 0.02
    assert result["trusted"].all()


# ---------------------------------------------------------------- trust, missing labels, groups, errors


def test_too_few_positives_or_negatives_is_untrusted(spark):
    histogram = score_histogram(hand_frame(spark), ["window"])
    # Realized 4 positives / 4 negatives; estimated 5 / 5 (rounded 5.2 / 4.8).
    result = performance_from_histogram(histogram, ["window"], min_positives=5, min_negatives=4)
    assert not result.loc[result["basis"] == "realized", "trusted"].any()
    assert result.loc[result["basis"] == "estimated", "trusted"].all()

    result = performance_from_histogram(histogram, ["window"], min_positives=1, min_negatives=6)
    assert not result["trusted"].any()
    assert not performance_from_histogram(histogram, ["window"])["trusted"].any()  # default 30 / 30


def test_group_without_labels_gets_only_estimated_rows(spark):
    windows = ["w1"] * 4 + ["w2"] * 3
    scores = [0.2, 0.4, 0.6, 0.8, 0.3, 0.5, 0.9]
    labels = [0, 1, 0, 1, None, None, None]
    histogram = score_histogram(frame(spark, windows, ["de"] * 7, scores, labels), ["window"])
    result = performance_from_histogram(histogram, ["window"])

    w2 = result[result["window"] == "w2"]
    assert w2["basis"].unique().tolist() == ["estimated"]
    assert w2["n_rows"].unique().tolist() == [3]
    assert metric(result, "estimated", "expected_rate", window="w2")["value"] == pytest.approx(1.7 / 3)
    assert set(result.loc[result["window"] == "w1", "basis"]) == {"realized", "estimated"}


def test_one_class_windows_have_no_auc_but_keep_their_rates(spark):
    result = performance_from_histogram(
        score_histogram(frame(spark, ["w1"] * 3, ["de"] * 3, [0.2, 0.5, 0.7], [1, 1, 1]), ["window"]), ["window"]
    )
    assert np.isnan(metric(result, "realized", "roc_auc")["value"])
    assert metric(result, "realized", "pr_auc")["value"] == 1.0  # every threshold has precision 1
    assert metric(result, "realized", "observed_rate")["value"] == 1.0


def test_grouping_by_two_columns_keeps_groups_apart(spark):
    # (w1, de): AUC 1 (0.1 neg < 0.9 pos); (w1, fr): AUC 0 (0.8 neg > 0.3 pos);
    # (w2, de): AUC 0.5 (a tie at 0.5); (w2, null country): one unlabeled row.
    windows = ["w1", "w1", "w1", "w1", "w2", "w2", "w2"]
    countries = ["de", "de", "fr", "fr", "de", "de", None]
    scores = [0.1, 0.9, 0.8, 0.3, 0.5, 0.5, 0.4]
    labels = [0, 1, 0, 1, 0, 1, None]
    by = ["window", "country"]
    result = performance_from_histogram(score_histogram(frame(spark, windows, countries, scores, labels), by), by)

    assert metric(result, "realized", "roc_auc", window="w1", country="de")["value"] == 1.0
    assert metric(result, "realized", "roc_auc", window="w1", country="fr")["value"] == 0.0
    assert metric(result, "realized", "roc_auc", window="w2", country="de")["value"] == 0.5
    null_country = result[result["country"].isna()]
    assert null_country[["window", "basis"]].drop_duplicates().values.tolist() == [["w2", "estimated"]]
    assert null_country["country"].tolist() == [None] * 3
    assert result.groupby(by, dropna=False).ngroups == 4


def test_invalid_scores_labels_and_parameters_are_named(spark):
    with pytest.raises(ValueError, match=r"1 row\(s\) of 'probability' are NaN or outside \[0, 1\]"):
        score_histogram(frame(spark, ["w1"] * 2, ["de"] * 2, [0.5, 1.5], [0, 1]), ["window"])
    with pytest.raises(ValueError, match=r"1 labeled row\(s\) of 'label' are not 0 or 1"):
        score_histogram(frame(spark, ["w1"] * 2, ["de"] * 2, [0.5, 0.6], [0, 2]), ["window"])
    with pytest.raises(ValueError, match=r"column\(s\) \['segment'\] not in the frame"):
        score_histogram(frame(spark, ["w1"], ["de"], [0.5], [0]), ["segment"])
    histogram = pd.DataFrame(
        {"bin": [1], "n": [1], "n_labeled": [1], "positives": [1], "score_sum": [0.1], "score_sum_labeled": [0.1]}
    )
    with pytest.raises(ValueError, match="calibration_bins=7 does not divide bins=1000"):
        performance_from_histogram(histogram, [], calibration_bins=7)
    with pytest.raises(ValueError, match=r"bin 1 is outside \[0, 1\)"):
        performance_from_histogram(histogram, [], bins=1, calibration_bins=1)
    with pytest.raises(ValueError, match="confidence=1.5"):
        performance_from_histogram(histogram, [], confidence=1.5)
