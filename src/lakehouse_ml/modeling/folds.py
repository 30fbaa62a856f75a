"""Rolling-origin folds over the training set's cutoffs, shared by tuning, training and evaluation."""

from __future__ import annotations

from typing import Any

import pandas as pd

from lakehouse_ml.features.tables import CUTOFF, ENTITY
from lakehouse_ml.modeling.guards import cutoffs_problem, raise_problems

Fold = tuple[list[Any], list[Any]]


def time_folds(cutoffs: list, n_folds: int, test_cutoffs: int, gap_cutoffs: int = 0) -> tuple[list[Fold], list[Any]]:
    """Rolling-origin (train, validation) cutoff folds and the held-out final test cutoffs.

    The last ``test_cutoffs`` sorted distinct cutoffs are the test window and appear in no fold.
    The remaining cutoffs end in ``n_folds`` equal validation blocks; fold k trains on every
    cutoff strictly before its block, minus the ``gap_cutoffs`` just before it (labels of those
    look past the validation cutoff when the label horizon is longer than the cutoff spacing).
    Fewer than ``test_cutoffs + gap_cutoffs + n_folds + 1`` distinct cutoffs fail, naming the
    settings to change.
    """
    ordered = sorted(set(cutoffs))
    raise_problems([cutoffs_problem(len(ordered), n_folds, test_cutoffs, gap_cutoffs)], "time_folds")
    tuning = ordered[: len(ordered) - test_cutoffs]
    test = ordered[len(ordered) - test_cutoffs :]
    size = (len(tuning) - gap_cutoffs) // (n_folds + 1)
    folds = []
    for k in range(n_folds):
        start = len(tuning) - (n_folds - k) * size
        folds.append((tuning[: start - gap_cutoffs], tuning[start : start + size]))
    return folds, test


def in_key_order(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted by cutoff and customer: a Delta read has no row order, and fits that subsample
    (early stopping, bootstrap) would otherwise differ between two reads of the same version."""
    return frame.sort_values([CUTOFF, ENTITY], kind="stable").reset_index(drop=True)
