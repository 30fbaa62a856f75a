"""Time folds over spine cutoffs (lakehouse_ml.modeling.folds): training always before validation, the
test window in no fold."""

from __future__ import annotations

import pandas as pd
import pytest

from lakehouse_ml.modeling.folds import time_folds
from lakehouse_ml.modeling.guards import TrainingDataError


def test_time_folds_hand_checked():
    """10 cutoffs, 2 test, 3 folds: blocks of 2 from the 8 tuning cutoffs, trained on all before."""
    folds, test = time_folds([*list(range(9, -1, -1)), 3, 3], n_folds=3, test_cutoffs=2)
    assert test == [8, 9]
    assert folds == [([0, 1], [2, 3]), ([0, 1, 2, 3], [4, 5]), ([0, 1, 2, 3, 4, 5], [6, 7])]


def test_time_folds_with_gap_leaves_out_the_cutoffs_before_validation():
    """A gap of 1 drops the cutoff just before each validation block from its training rows."""
    folds, test = time_folds(list(range(10)), n_folds=2, test_cutoffs=1, gap_cutoffs=1)
    assert test == [9]
    # 9 tuning cutoffs, gap 1: blocks of (9 - 1) // 3 = 2 -> validation [5, 6] and [7, 8]
    assert folds == [([0, 1, 2, 3], [5, 6]), ([0, 1, 2, 3, 4, 5], [7, 8])]


@pytest.mark.parametrize(
    ("n", "n_folds", "test_cutoffs", "gap"), [(12, 3, 2, 0), (20, 4, 3, 2), (7, 2, 1, 0), (30, 5, 4, 4)]
)
def test_time_folds_never_validate_before_training_and_never_touch_test(n, n_folds, test_cutoffs, gap):
    """Every validation cutoff is after every training cutoff; the test window is in no fold."""
    cutoffs = list(pd.date_range("2024-01-01", periods=n, freq="7D"))[::-1]
    folds, test = time_folds(cutoffs, n_folds, test_cutoffs, gap)
    assert len(folds) == n_folds and test == sorted(cutoffs)[-test_cutoffs:]
    for train, valid in folds:
        assert train and valid
        assert min(valid) > max(train)
        assert not set(test) & (set(train) | set(valid))


def test_time_folds_rejects_too_few_cutoffs():
    """Not enough cutoffs for a training and a validation block per fold is an error naming the
    count needed and the settings to change."""
    with pytest.raises(TrainingDataError, match="too few") as raised:
        time_folds([1, 2, 3], n_folds=3, test_cutoffs=1)
    message = str(raised.value)
    assert message.startswith("time_folds: 3 distinct cutoffs are too few for the split")
    assert (
        "tuning.test_cutoffs=1 + tuning.gap_cutoffs=0 + tuning.n_folds=3 + 1" in message
        and "= 5 at the least" in message
    )
    assert "training_set.spine.every_days" in message
    time_folds([1, 2, 3, 4, 5], n_folds=3, test_cutoffs=1)  # exactly enough
