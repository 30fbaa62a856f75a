"""The monitoring baseline of a model: what its inputs and scores looked like when it was validated.

Built once per candidate at evaluation, where its training rows and its scores on the held-out test
window are at hand, and stored with its run id (``<catalog>.monitoring.baselines``), so monitoring
compares every later window with the baseline of the version that served it without loading the
model or time-travelling the training set:

* ``features``: per model input, ``numeric_baseline`` / ``categorical_baseline`` of the training rows
  (the cutoffs the model was fitted on), the reference for data drift;
* ``scores``: ``score_baseline`` of the candidate's scores on the test window at its operating
  threshold (held-out scores: training-row scores are over-confident), the reference for prediction drift;
* ``reference``: realized ROC AUC, PR AUC, positive rate and calibration on the test window, the
  reference a performance drop is measured from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from lakehouse_ml.monitoring.drift import categorical_baseline, numeric_baseline, score_baseline
from lakehouse_ml.monitoring.performance import performance_from_histogram, score_histogram

SCORE, LABEL = "probability", "label"


def split_inputs(frame: DataFrame, inputs: Sequence[str]) -> tuple[list[str], list[str]]:
    """The numeric and the categorical (everything else) model inputs, by their type in ``frame``."""
    types = {field.name: field.dataType for field in frame.schema.fields}
    missing = [column for column in inputs if column not in types]
    if missing:
        raise ValueError(f"monitoring baseline: model inputs {missing} are not columns of the frame ({sorted(types)})")
    numeric = [c for c in inputs if isinstance(types[c], T.NumericType) and not isinstance(types[c], T.BooleanType)]
    return numeric, [c for c in inputs if c not in numeric]


def reference_performance(scores: DataFrame, *, min_positives: int = 30, min_negatives: int = 30) -> dict[str, Any]:
    """Realized metrics of ``scores`` (columns ``probability``, ``label``) as ``{metric: {value, lower, upper, trusted}}``."""
    rows = performance_from_histogram(
        score_histogram(scores, [], score=SCORE, label=LABEL), [], min_positives=min_positives, min_negatives=min_negatives
    )
    realized = rows[rows["basis"] == "realized"]
    return {
        row.metric: {
            "value": None if pd.isna(row.value) else float(row.value),
            "lower": None if pd.isna(row.lower) else float(row.lower),
            "upper": None if pd.isna(row.upper) else float(row.upper),
            "n_rows": int(row.n_rows), "trusted": bool(row.trusted),
        }
        for row in realized.itertuples()
    }


def build_monitoring_baseline(
    training_rows: DataFrame, inputs: Sequence[str], test_scores: DataFrame, threshold: float,
    *, min_positives: int = 30, min_negatives: int = 30,
) -> dict[str, Any]:
    """The baseline of one model: input profiles of ``training_rows``, score profile and reference
    performance of ``test_scores`` (columns ``probability`` and ``label``) at ``threshold``."""
    numeric, categorical = split_inputs(training_rows, inputs)
    features = {
        **(numeric_baseline(training_rows, numeric) if numeric else {}),
        **(categorical_baseline(training_rows, categorical) if categorical else {}),
    }
    return {
        "inputs": list(inputs),
        "features": {column: features[column] for column in inputs},
        "scores": score_baseline(test_scores, threshold, score_column=SCORE),
        "reference": reference_performance(test_scores, min_positives=min_positives, min_negatives=min_negatives),
    }
