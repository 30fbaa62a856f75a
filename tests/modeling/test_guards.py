"""Training-data guards on hand-made counts and frames: each rule, and the key parts of its message."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from lakehouse_ml.features.lookup import FeatureLookup, build_training_set
from lakehouse_ml.modeling.guards import (
    LookupCoverage,
    TrainingDataError,
    constant_features,
    coverage_problem,
    cutoffs_problem,
    feature_problem,
    label_problem,
    matched_counts,
    raise_problems,
    unmatched_causes,
)

COVERAGE = LookupCoverage(table="customer_activity", rows=1000, matched=0, keys=("customer_id",))


# ---------------------------------------------------------------- lookup coverage


def test_coverage_at_or_above_the_minimum_passes():
    assert coverage_problem(LookupCoverage("t", rows=1000, matched=800), 0.8) is None
    assert coverage_problem(LookupCoverage("t", rows=0, matched=0), 0.8) is None  # an empty spine misses nothing
    assert coverage_problem(LookupCoverage("t", rows=1000, matched=0), 0.0) is None  # 0 turns the check off


def test_rows_known_only_after_the_cutoffs_point_at_the_availability_setting():
    problem = coverage_problem(replace(COVERAGE, causes={"known_after_cutoff": 1000}), 0.8)
    assert "lookup 'customer_activity' matched a feature row for 0 of 1,000 spine rows (0.0%)" in problem
    assert "training_set.guards.min_matched_share expects at least 80.0%" in problem
    assert "Likely cause (1,000 of the 1,000 unmatched rows)" in problem
    assert (
        "all feature rows stamped by the cutoff became known (ingested_at, the availability time) only after the cutoff"
        in problem
    )
    assert "training_set.lookups.customer_activity.filter_by_ingested_at: false" in problem
    assert "ingest.sources.<source>.known_at (e.g. {event_time_plus: 1 day}" in problem
    assert "Unmatched rows by cause: known_after_cutoff 1,000" in problem


def test_no_row_for_the_key_says_the_keys_do_not_match():
    coverage = LookupCoverage(
        "customer_profile",
        rows=500,
        matched=100,
        keys=("customer_id",),
        causes={"no_row_for_key": 390, "outside_lookback_window": 10},
    )
    problem = coverage_problem(coverage, 0.5)
    assert "matched a feature row for 100 of 500 spine rows (20.0%)" in problem
    assert "Likely cause (390 of the 400 unmatched rows): the keys do not match" in problem
    assert "customer_id" in problem and "entity_keys" in problem
    assert "no_row_for_key 390, outside_lookback_window 10" in problem


@pytest.mark.parametrize(
    ("cause", "expected"),
    [
        ("stamped_after_cutoff", "training_set.spine.first_cutoff"),
        ("outside_lookback_window", "training_set.lookups.t.lookback_window"),
        ("other", "NULL"),
    ],
)
def test_each_cause_names_what_to_change(cause, expected):
    problem = coverage_problem(LookupCoverage("t", rows=10, matched=0, causes={cause: 10}), 0.8)
    assert "Likely cause (10 of the 10 unmatched rows)" in problem and expected in problem


def test_without_measured_causes_the_message_is_generic():
    problem = coverage_problem(LookupCoverage("t", rows=10, matched=1), 0.8)
    assert "matched a feature row for 1 of 10 spine rows (10.0%)" in problem
    assert "Likely cause" not in problem and "training_set.lookups.t" in problem


def _lookup(features, **kwargs) -> FeatureLookup:
    return FeatureLookup(
        source=features,
        feature_names=["x", "feature_ts", "ingested_at"],
        lookup_key="customer_id",
        timestamp_key="feature_ts",
        ingested_at_key="ingested_at",
        filter_by_ingested_at=True,
        prefix="t__",
        **kwargs,
    )


def test_unmatched_rows_are_told_apart_by_cause(spark):
    """One spine row per cause at the cutoff Feb 10, a 2-day lookback window."""
    cutoff = datetime(2026, 2, 10)
    spine = spark.createDataFrame(
        [(c, cutoff, 0) for c in ("matched", "no_row", "later", "unknown", "stale")] + [("matched", cutoff, 1)],
        "customer_id string, cutoff_ts timestamp, churned int",
    )
    features = spark.createDataFrame(
        [
            ("matched", 1.0, datetime(2026, 2, 9), datetime(2026, 2, 9, 2)),
            ("later", 2.0, datetime(2026, 2, 11), datetime(2026, 2, 11, 2)),  # stamped after the cutoff
            ("unknown", 3.0, datetime(2026, 2, 9), datetime(2026, 3, 1)),  # stamped before, known after
            ("unknown", 3.0, datetime(2026, 2, 12), datetime(2026, 3, 1)),
            ("stale", 4.0, datetime(2026, 1, 1), datetime(2026, 1, 1, 2)),  # known, older than 2 days
            ("someone_else", 5.0, datetime(2026, 2, 9), datetime(2026, 2, 9, 2)),
        ],
        "customer_id string, x double, feature_ts timestamp, ingested_at timestamp",
    )
    lookup = _lookup(features, lookback_window="2 days")
    frame = build_training_set(spine, [lookup], "customer_id", "cutoff_ts")
    counts = matched_counts(frame, [lookup], "churned")
    assert counts == {"rows": 6, "matched": {"t": 2}, "labels": {0: 5, 1: 1}}
    assert unmatched_causes(frame, lookup, "cutoff_ts") == {
        "no_row_for_key": 1,
        "stamped_after_cutoff": 1,
        "known_after_cutoff": 1,
        "outside_lookback_window": 1,
    }


def test_every_row_delivered_after_every_cutoff_is_an_availability_problem(spark):
    """One delivery of the whole history after the last cutoff: every lookup finds nothing known yet."""
    spine = spark.createDataFrame(
        [(f"c{i}", datetime(2026, 1, d), 0) for i in range(3) for d in (10, 17, 24)],
        "customer_id string, cutoff_ts timestamp, churned int",
    )
    features = spark.createDataFrame(
        [(f"c{i}", float(d), datetime(2026, 1, d), datetime(2026, 6, 30)) for i in range(3) for d in range(1, 31)],
        "customer_id string, x double, feature_ts timestamp, ingested_at timestamp",
    )
    lookup = _lookup(features)
    frame = build_training_set(spine, [lookup], "customer_id", "cutoff_ts")
    counts = matched_counts(frame, [lookup])
    coverage = LookupCoverage(
        "t",
        counts["rows"],
        counts["matched"]["t"],
        ("customer_id",),
        causes=unmatched_causes(frame, lookup, "cutoff_ts"),
    )
    assert (coverage.rows, coverage.matched, dict(coverage.causes)) == (9, 0, {"known_after_cutoff": 9})
    assert "filter_by_ingested_at: false" in coverage_problem(coverage, 0.8)


def test_coverage_needs_the_lookup_to_return_its_timestamp(spark):
    features = spark.createDataFrame(
        [("c", 1.0, datetime(2026, 1, 1))], "customer_id string, x double, feature_ts timestamp"
    )
    lookup = FeatureLookup(
        source=features, feature_names=["x"], lookup_key="customer_id", timestamp_key="feature_ts", prefix="t__"
    )
    with pytest.raises(ValueError, match="does not return its timestamp_key 'feature_ts'"):
        matched_counts(features, [lookup])


# ---------------------------------------------------------------- label


def test_label_with_both_classes_or_no_rows_passes():
    assert label_problem({0: 90, 1: 10}) is None
    assert label_problem({0: 0, 1: 0}) is None


def test_nobody_churned_points_at_a_longer_horizon():
    problem = label_problem({0: 1200, 1: 0})
    assert "the label churned has a single class in 1,200 spine rows (0: 1,200, 1: 0)" in problem
    assert "nobody churned" in problem and "longer training_set.spine.horizon_days" in problem
    assert "training_set.spine.active_lookback_days" in problem


def test_everybody_churned_points_at_missing_orders_or_a_shorter_horizon():
    problem = label_problem({1: 40}, label="churned")
    assert "single class in 40 spine rows (0: 0, 1: 40)" in problem
    assert "everybody churned" in problem and "shorter training_set.spine.horizon_days" in problem


# ---------------------------------------------------------------- cutoffs for the split


def test_enough_cutoffs_pass_and_too_few_name_the_count_and_the_settings():
    assert cutoffs_problem(9, n_folds=2, test_cutoffs=2, gap_cutoffs=4) is None  # the default loop: exactly enough
    problem = cutoffs_problem(8, n_folds=2, test_cutoffs=2, gap_cutoffs=4)
    assert "8 distinct cutoffs are too few for the split" in problem
    assert (
        "tuning.test_cutoffs=2 + tuning.gap_cutoffs=4 + tuning.n_folds=2 + 1" in problem
        and "= 9 at the least" in problem
    )
    assert "training_set.spine.every_days" in problem and "simulate.n_days" in problem
    assert "lower tuning.n_folds, tuning.test_cutoffs or tuning.gap_cutoffs" in problem


def test_invalid_split_settings_are_named():
    assert "tuning.n_folds must be >= 1" in cutoffs_problem(20, n_folds=0, test_cutoffs=2, gap_cutoffs=0)


# ---------------------------------------------------------------- feature variation


def _rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "cutoff_ts": pd.to_datetime(["2026-03-31", "2026-03-31", "2026-04-07", "2026-04-07"], utc=True),
            "orders": [1.0, 2.0, None, 3.0],
            "empty": [np.nan] * 4,
            "empty_category": [None] * 4,
            "country": ["DE"] * 4,
            "flag": [1.0, None, 1.0, None],
        }
    )


def test_varying_features_and_one_value_with_nulls_pass():
    assert feature_problem(_rows(), ["orders", "flag"]) is None
    assert feature_problem(_rows().iloc[0:0], ["empty"]) is None
    assert constant_features(_rows(), ["orders", "flag"]) == {}


def test_all_null_features_fail():
    problem = feature_problem(_rows(), ["orders", "empty", "empty_category"])
    assert "2 feature(s) are NULL in every one of the 4 training rows (cutoffs 2026-03-31..2026-04-07)" in problem
    assert "empty, empty_category" in problem and "training_set.guards.min_matched_share" in problem
    assert "training_set.lookups.<table>.features" in problem


def test_constant_features_are_found_after_imputation_and_fail_when_told_to():
    assert constant_features(_rows(), ["orders", "country"]) == {"country": "DE"}
    # One value and NULLs is constant once the contract imputes that value (a source that delivered nothing).
    assert constant_features(_rows(), ["flag"], {"flag": _rows()["flag"].dropna().iloc[0]}) == {
        "flag": _rows()["flag"].dropna().iloc[0]
    }
    problem = feature_problem(_rows(), ["orders", "country"], {"country": "DE"})
    assert "1 feature(s) hold one value in every one of the 4 training rows" in problem
    assert "country = 'DE'" in problem and "tuning.guards.constant_features: leave_out" in problem


def test_problems_are_raised_together():
    raise_problems([None, None], "tuning")
    with pytest.raises(TrainingDataError, match=r"^training set: only one$"):
        raise_problems([None, "only one"], "training set")
    with pytest.raises(TrainingDataError, match=r"training set: 2 problems:\n- a\n- b"):
        raise_problems(["a", None, "b"], "training set")
