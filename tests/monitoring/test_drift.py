"""Drift metrics on tiny hand-made windows: PSI, W1, JS distance, p-values, thresholds and nulls.

Baseline ``x`` = 1..10 throughout: its deciles (linear interpolation, position 9p) are
1.9, 2.8, …, 9.1, snapped down to the baseline values 1, 2, …, 9, so every value sits alone in its
right-closed bin (1 in (-inf, 1], 2 in (1, 2], …, 10 in (9, +inf)) and every bin holds 0.1.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F
from scipy import stats
from scipy.spatial.distance import jensenshannon

from lakehouse_ml.monitoring import (
    EPSILON,
    NULL_CATEGORY,
    categorical_baseline,
    feature_drift,
    numeric_baseline,
    prediction_drift,
)

BASELINE_X = [float(v) for v in range(1, 11)]
# 20 rows: bin 0 gets 1,1,1 (0.15), bin 1 gets 2 (0.05), every other bin two values (0.1).
CURRENT_X = [1.0, 1.0, 1.0, 2.0, *[float(v) for v in range(3, 11) for _ in range(2)]]
BASELINE_C = ["a"] * 5 + ["b"] * 3 + [None] * 2
CURRENT_C = ["a"] * 2 + ["b"] * 4 + ["c"] * 2 + [None] * 2


def frame(spark, column: str, values: list, dtype: str = "double"):
    """A one-column Spark frame of ``values`` (None as null)."""
    return spark.createDataFrame([(v,) for v in values], f"{column} {dtype}")


def row_of(result: pd.DataFrame, feature: str) -> pd.Series:
    """The drift row of ``feature``."""
    return result.set_index("feature").loc[feature]


# ---------------------------------------------------------------- baselines


def test_numeric_baseline_has_decile_edges_equal_shares_and_moments(spark):
    profile = numeric_baseline(frame(spark, "x", BASELINE_X), ["x"])["x"]

    assert profile["edges"] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    assert profile["bin_counts"] == [1] * 10
    assert profile["bin_shares"] == pytest.approx([0.1] * 10)
    assert (profile["count"], profile["null_share"], profile["mean"]) == (10, 0.0, pytest.approx(5.5))
    assert profile["std"] == pytest.approx(math.sqrt(55 / 6))  # sum((v - 5.5)^2) = 82.5, / 9
    assert profile["quantiles"] == pytest.approx(
        np.quantile(BASELINE_X, [(i + 0.5) / 100 for i in range(100)]).tolist()
    )
    assert profile["values"] == BASELINE_X  # 10 rows <= small_window_rows
    json.dumps(profile)  # storable as is


def test_tied_deciles_merge_into_one_edge_and_every_baseline_bin_holds_values(spark):
    # Sorted 0,0,0,0,0,0,1,2,3,4: deciles 0, 0, 0, 0, 0, 0.4, 1.3, 2.2, 3.1 snap down to
    # 0, 0, 0, 0, 0, 0, 1, 2, 3 (0.4 would cut the empty bin (0, 0.4]); the six 0 edges merge.
    profile = numeric_baseline(frame(spark, "x", [0.0] * 6 + [1.0, 2.0, 3.0, 4.0]), ["x"])["x"]
    assert profile["edges"] == [0.0, 1.0, 2.0, 3.0]
    assert profile["bin_shares"] == pytest.approx([0.6, 0.1, 0.1, 0.1, 0.1])

    # A 0/1 feature: deciles 0, 0, 0, 0, 0.5, 1, 1, 1, 1 snap to 0 and 1; 1 is the maximum and is
    # dropped, since (1, +inf) would hold no baseline value.
    binary = numeric_baseline(frame(spark, "x", [0.0] * 5 + [1.0] * 5), ["x"])["x"]
    assert binary["edges"] == [0.0]
    assert binary["bin_shares"] == pytest.approx([0.5, 0.5])


def test_numeric_baseline_counts_nulls_apart_and_keeps_values_only_for_small_baselines(spark):
    profile = numeric_baseline(frame(spark, "x", BASELINE_X + [None] * 10), ["x"], small_window_rows=5)["x"]

    assert profile["null_share"] == 0.5 and profile["null_count"] == 10
    assert profile["edges"] == [float(v) for v in range(1, 10)]  # of the non-null values
    assert profile["bin_shares"] == pytest.approx([0.05] * 10)  # shares of all 20 rows
    assert profile["values"] is None


def test_categorical_baseline_shares_with_null_as_its_own_category(spark):
    profile = categorical_baseline(frame(spark, "c", BASELINE_C, "string"), ["c"])["c"]

    assert profile["counts"] == {NULL_CATEGORY: 2, "a": 5, "b": 3}
    assert profile["shares"] == pytest.approx({NULL_CATEGORY: 0.2, "a": 0.5, "b": 0.3})
    assert (profile["count"], profile["null_share"]) == (10, 0.2)


def test_baselines_name_the_feature_that_cannot_be_profiled(spark):
    with pytest.raises(ValueError, match=r"'c' has type string; expected a numeric type"):
        numeric_baseline(frame(spark, "c", BASELINE_C, "string"), ["c"])
    with pytest.raises(ValueError, match=r"'y' is not a column"):
        numeric_baseline(frame(spark, "x", BASELINE_X), ["y"])
    with pytest.raises(ValueError, match=r"'x' has no non-null value in the baseline \(3 rows\)"):
        numeric_baseline(frame(spark, "x", [None] * 3), ["x"])


# ---------------------------------------------------------------- numeric drift


def test_psi_of_known_bin_shares(spark):
    profile = numeric_baseline(frame(spark, "x", BASELINE_X), ["x"])
    result = row_of(feature_drift(frame(spark, "x", CURRENT_X), profile), "x")

    # (0.15 - 0.1) ln(0.15 / 0.1) + (0.05 - 0.1) ln(0.05 / 0.1) = 0.05 ln 1.5 + 0.05 ln 2 = 0.05 ln 3
    assert result["value"] == pytest.approx(0.05 * math.log(3)) == pytest.approx(0.0549306)
    assert (result["metric"], result["status"], result["log_base"]) == ("psi", "ok", "e")
    assert (result["warn"], result["act"]) == (0.10, 0.25)
    assert (result["n_baseline"], result["n_current"], result["bins"]) == (10, 20, 11)  # 10 value bins + null


def test_identical_distributions_have_no_drift(spark):
    profile = numeric_baseline(frame(spark, "x", BASELINE_X), ["x"])
    same = row_of(feature_drift(frame(spark, "x", BASELINE_X), profile), "x")
    assert (same["value"], same["wasserstein_norm"], same["status"]) == (0.0, 0.0, "ok")

    # Three copies of the baseline: the same distribution, so the same shares. The interpolated
    # quantile functions of 10 and 30 values still differ a little (between two order
    # statistics they interpolate over 1/9 and 1/29 of the probability), a small-sample bias of
    # the quantile form of W1 that scipy's exact W1 (0 here) does not have.
    replicated = row_of(feature_drift(frame(spark, "x", BASELINE_X * 3), profile), "x")
    assert replicated["value"] == pytest.approx(0.0, abs=1e-12) and replicated["status"] == "ok"
    assert 0 < replicated["wasserstein_norm"] < 0.1


def test_shifted_distribution_exceeds_act(spark):
    profile = numeric_baseline(frame(spark, "x", BASELINE_X), ["x"])
    result = row_of(feature_drift(frame(spark, "x", [v + 10 for v in BASELINE_X]), profile), "x")

    # All rows in the last bin; the 9 empty bins count EPSILON:
    # (1 - 0.1) ln(1 / 0.1) + 9 (1e-4 - 0.1) ln(1e-4 / 0.1) = 0.9 ln 10 + 9 * 0.0999 ln 1000 = 8.2831
    expected = 0.9 * math.log(10) + 9 * (0.1 - EPSILON) * math.log(1000)
    assert result["value"] == pytest.approx(expected) == pytest.approx(8.2831, abs=1e-4)
    assert result["status"] == "act"
    # Every quantile moves by 10: W1 = 10, over the baseline's std sqrt(55/6).
    assert result["wasserstein"] == pytest.approx(10.0)
    assert result["wasserstein_norm"] == pytest.approx(10 / math.sqrt(55 / 6))


def test_nulls_in_the_current_window_are_a_bin_of_their_own(spark):
    baseline = numeric_baseline(frame(spark, "x", BASELINE_X), ["x"])
    result = row_of(feature_drift(frame(spark, "x", BASELINE_X + [None] * 10), baseline), "x")

    # Value bins 0.05 each against 0.1, null bin 0.5 against 0 (-> EPSILON):
    # 10 (0.05 - 0.1) ln(0.5) + (0.5 - 1e-4) ln(0.5 / 1e-4) = 0.5 ln 2 + 0.4999 ln 5000 = 4.6043
    assert result["value"] == pytest.approx(0.5 * math.log(2) + (0.5 - EPSILON) * math.log(5000))
    assert (result["null_share_baseline"], result["null_share_current"]) == (0.0, 0.5)
    assert result["wasserstein_norm"] == pytest.approx(0.0, abs=1e-12)  # same non-null values


def test_normalised_wasserstein_agrees_with_scipy(spark):
    rng = np.random.default_rng(7)
    baseline_values = rng.normal(0.0, 1.0, 3000)
    cases = {
        "shift": rng.normal(0.5, 1.0, 3000),
        "scale": rng.normal(0.0, 2.0, 2000),
        "skew": rng.exponential(1.0, 3000),
    }
    baseline = numeric_baseline(frame(spark, "x", baseline_values.tolist()), ["x"])
    for name, values in cases.items():
        result = row_of(feature_drift(frame(spark, "x", values.tolist()), baseline), "x")
        exact = stats.wasserstein_distance(baseline_values, values) / baseline_values.std(ddof=1)
        # Stated tolerance: 0.02 baseline standard deviations (midpoint rule over 100 quantiles).
        assert result["wasserstein_norm"] == pytest.approx(exact, abs=0.02), name


def test_empty_current_window_has_no_data(spark):
    profile = numeric_baseline(frame(spark, "x", BASELINE_X), ["x"])
    result = row_of(feature_drift(frame(spark, "x", BASELINE_X).where(F.lit(False)), profile), "x")

    assert result["status"] == "no_data" and math.isnan(result["value"]) and result["n_current"] == 0


# ---------------------------------------------------------------- categorical drift


def test_categorical_js_distance_and_linf(spark):
    profile = categorical_baseline(frame(spark, "c", BASELINE_C, "string"), ["c"])
    result = row_of(feature_drift(frame(spark, "c", CURRENT_C, "string"), profile), "c")

    # Categories __null__, a, b, c: baseline 0.2, 0.5, 0.3, 0; current 0.2, 0.2, 0.4, 0.2.
    p, q = [0.2, 0.5, 0.3, 0.0], [0.2, 0.2, 0.4, 0.2]
    assert result["value"] == pytest.approx(jensenshannon(p, q)) == pytest.approx(0.325738, abs=1e-6)
    assert result["linf"] == pytest.approx(0.3)  # category a: |0.5 - 0.2|
    assert (result["metric"], result["log_base"], result["status"]) == ("js_distance", "e", "act")
    assert result["null_share_current"] == 0.2


def test_identical_categories_have_no_drift(spark):
    profile = categorical_baseline(frame(spark, "c", BASELINE_C, "string"), ["c"])
    result = row_of(feature_drift(frame(spark, "c", BASELINE_C * 2, "string"), profile), "c")

    assert (result["value"], result["linf"], result["status"]) == (
        pytest.approx(0.0, abs=1e-12),
        pytest.approx(0.0),
        "ok",
    )


# ---------------------------------------------------------------- p-values, thresholds, prediction drift


def test_p_values_only_for_small_windows(spark):
    base = spark.createDataFrame(list(zip(BASELINE_X, BASELINE_C)), "x double, c string")
    current = spark.createDataFrame(list(zip(CURRENT_X[:10], CURRENT_C)), "x double, c string")
    profile = {**numeric_baseline(base, ["x"]), **categorical_baseline(base, ["c"])}

    small = feature_drift(current, profile)
    assert row_of(small, "x")["p_value"] == pytest.approx(stats.ks_2samp(BASELINE_X, CURRENT_X[:10]).pvalue)
    assert row_of(small, "x")["p_value_test"] == "ks_2samp"
    # Columns __null__, a, b, c of the 2 x 4 table of counts.
    table = [[2, 5, 3, 0], [2, 2, 4, 2]]
    assert row_of(small, "c")["p_value"] == pytest.approx(stats.chi2_contingency(table, correction=False).pvalue)

    large = feature_drift(current, profile, small_window_rows=9)
    assert large["p_value"].isna().all() and large["p_value_test"].isna().all()


def test_per_feature_threshold_overrides(spark):
    profile = numeric_baseline(frame(spark, "x", BASELINE_X), ["x"])
    current = frame(spark, "x", CURRENT_X)

    result = row_of(feature_drift(current, profile, {"x": {"psi": {"warn": 0.05}}}), "x")
    assert (result["warn"], result["act"], result["status"]) == (0.05, 0.25, "warn")  # PSI 0.0549
    with pytest.raises(ValueError, match=r"feature 'x': unknown metric\(s\) \['ks'\]"):
        feature_drift(current, profile, {"x": {"ks": {"warn": 0.05}}})
    with pytest.raises(ValueError, match=r"feature 'x', psi: expected warn <= act, got warn 0.3 > act 0.25"):
        feature_drift(current, profile, {"x": {"psi": {"warn": 0.3}}})
    with pytest.raises(ValueError, match=r"thresholds for \['y'\], which the baseline profile does not hold"):
        feature_drift(current, profile, {"y": {"psi": {"warn": 0.05}}})


def test_prediction_drift_psi_and_positive_rate(spark):
    baseline = [round(0.05 + 0.1 * k, 2) for k in range(10)]  # 0.05 .. 0.95, five of them >= 0.5
    current = [v for v in baseline[5:] for _ in range(2)]  # 0.55 .. 0.95 twice: all >= 0.5
    result = prediction_drift(frame(spark, "probability", current), frame(spark, "probability", baseline), 0.5).iloc[0]

    # Deciles 0.14, 0.23, ..., 0.86 snap to the edges 0.05, 0.15, ..., 0.85: bins 5..9 hold 0.2
    # each (baseline 0.1), bins 0..4 none (EPSILON):
    # 5 (0.2 - 0.1) ln 2 + 5 (0.1 - 1e-4) ln(0.1 / 1e-4) = 0.5 ln 2 + 0.4995 ln 1000 = 3.7970
    assert result["psi"] == pytest.approx(0.5 * math.log(2) + 5 * (0.1 - EPSILON) * math.log(1000))
    assert result["status"] == "act"
    assert (result["positive_rate_baseline"], result["positive_rate_current"]) == (0.5, 1.0)
    assert result["positive_rate_change"] == pytest.approx(0.5)
    assert (result["n_baseline"], result["n_current"]) == (10, 10)


# ---------------------------------------------------------------- grouped (windows, versions, slices)


def test_grouped_drift_equals_drift_of_each_group_alone(spark):
    """One grouped aggregation gives, per group, exactly what the group alone gives (p-values included)."""
    profile = {**numeric_baseline(frame(spark, "x", BASELINE_X), ["x"])}
    rows = [("d1", v, c) for v, c in zip(CURRENT_X, ["a", "b"] * 10)] + [("d2", v + 10, "a") for v in BASELINE_X]
    current = spark.createDataFrame(rows, "window string, x double, c string")
    profile.update(categorical_baseline(frame(spark, "c", BASELINE_C, "string"), ["c"]))

    grouped = feature_drift(current, profile, by=["window"])

    assert list(grouped.columns[:2]) == ["window", "feature"]
    assert list(grouped["window"]) == ["d1", "d1", "d2", "d2"]
    for window in ("d1", "d2"):
        alone = feature_drift(current.where(F.col("window") == window), profile)
        mine = grouped[grouped["window"] == window].drop(columns="window").reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, alone)
    # d2 is the baseline shifted by 10: every value above the last edge.
    assert row_of(grouped[grouped["window"] == "d2"], "x")["status"] == "act"


def test_grouped_prediction_drift_has_one_row_per_group(spark):
    baseline = frame(spark, "probability", [round(0.05 + 0.1 * k, 2) for k in range(10)])
    current = spark.createDataFrame(
        [("v1", 0.05), ("v1", 0.95), ("v2", 0.95), ("v2", 0.85)], "model_version string, probability double"
    )
    result = prediction_drift(current, baseline, 0.5, by=["model_version"]).set_index("model_version")

    # v1: one of two scores >= 0.5; v2: both. The baseline has five of ten.
    assert result.loc["v1", "positive_rate_change"] == pytest.approx(0.0)
    assert result.loc["v2", "positive_rate_change"] == pytest.approx(0.5)
    assert (result["n_current"] == 2).all()
