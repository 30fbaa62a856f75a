"""The monitoring baseline of a model: what its inputs and scores looked like when it was validated.

Built once per candidate at evaluation, where its training rows and its scores on the held-out test
window are at hand, and stored with its run id (``<catalog>.monitoring.baselines``), so monitoring
compares every later window with the baseline of the version that served it without loading the
model or time-travelling the training set:

* ``features``: per model input, ``numeric_baseline`` / ``categorical_baseline`` of the training rows
  (the cutoffs the model was fitted on) that inference would have scored (``servable_rows``), the
  reference for data drift;
* ``scores``: ``score_baseline`` of the candidate's scores on the (servable) test window at its operating
  threshold (held-out scores: training-row scores are over-confident), the reference for prediction drift;
* ``reference``: realized ROC AUC, PR AUC, positive rate and calibration on the test window, the
  reference a performance drop is measured from;
* ``slices``: the input and score profiles again per slice value (e.g. country = DE), so a slice is
  compared with itself in training, not with the whole population.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakehouse_ml.modeling.metrics import UNKNOWN, bucket_label
from lakehouse_ml.monitoring.drift import categorical_baseline, numeric_baseline, score_baseline
from lakehouse_ml.monitoring.performance import (
    OBSERVED_LABEL,
    PROBABILITY,
    performance_from_histogram,
    score_histogram,
)


def servable_rows(training_rows: DataFrame, stamp_columns: Sequence[str]) -> DataFrame:
    """Training rows inference would score: a feature row in every table (its timestamp column not null).

    Inference rejects the others as stale and monitoring sees only what was scored, so a baseline
    holding them would report their missing values as drift in every window.
    """
    condition = F.lit(True)
    for column in stamp_columns:
        if column in training_rows.columns:
            condition = condition & F.col(column).isNotNull()
    return training_rows.where(condition)


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
        score_histogram(scores, [], score=PROBABILITY, label=OBSERVED_LABEL),
        [],
        min_positives=min_positives,
        min_negatives=min_negatives,
    )
    realized = rows[rows["basis"] == "realized"]
    return {
        row.metric: {
            "value": None if pd.isna(row.value) else float(row.value),
            "lower": None if pd.isna(row.lower) else float(row.lower),
            "upper": None if pd.isna(row.upper) else float(row.upper),
            "n_rows": int(row.n_rows),
            "trusted": bool(row.trusted),
        }
        for row in realized.itertuples()
    }


def _profiles(rows: DataFrame, numeric: Sequence[str], categorical: Sequence[str]) -> dict[str, Any]:
    """Numeric and categorical profiles of ``rows`` together."""
    return {
        **(numeric_baseline(rows, numeric) if numeric else {}),
        **(categorical_baseline(rows, categorical) if categorical else {}),
    }


def slice_value(spec: Mapping[str, Any] | str, value: Column | None = None) -> Column:
    """A row's slice value as ``modeling.metrics.slice_values`` names it (one naming for training,
    evaluation and monitoring): the input as text, or the name of its bucket ``[e_i, e_i+1)`` for
    ``{column, edges}`` (below the first edge: the first bucket), ``unknown`` when null.
    ``value`` is the input's value when it is not the column itself (e.g. read from served JSON)."""
    spec = {"column": spec} if isinstance(spec, str) else spec
    value = F.col(f"`{spec['column']}`") if value is None else value
    if not spec.get("edges"):
        return F.coalesce(value.cast("string"), F.lit(UNKNOWN))
    edges = [float(e) for e in spec["edges"]]
    number = value.cast("double")
    bucket = F.lit(bucket_label(edges[-1], None))
    for low, high in reversed(list(itertools.pairwise(edges))):
        bucket = F.when(number < F.lit(high), F.lit(bucket_label(low, high))).otherwise(bucket)
    named = F.when(number.isNull() | F.isnan(number), F.lit(UNKNOWN)).otherwise(bucket)
    # Never null anyway; the embedded engine types CASE WHEN as nullable, and an array of slice
    # structs (monitoring's one row per slice) refuses fields that differ in nullability.
    return F.coalesce(named, F.lit(UNKNOWN))


def _slice_baselines(
    training_rows: DataFrame,
    test_scores: DataFrame,
    numeric: Sequence[str],
    categorical: Sequence[str],
    threshold: float,
    slices: Mapping[str, Mapping[str, Any]],
    min_rows: int,
) -> dict[str, dict[str, Any]]:
    """Per slice and value with at least ``min_rows`` training rows and test scores: input and score profiles."""
    found: dict[str, dict[str, Any]] = {}
    for name, spec in slices.items():
        if spec["column"] not in training_rows.columns or spec["column"] not in test_scores.columns:
            continue
        train_counts = dict(training_rows.groupBy(slice_value(spec).alias("v")).count().collect())
        test_counts = dict(test_scores.groupBy(slice_value(spec).alias("v")).count().collect())
        for value in sorted(v for v, n in train_counts.items() if n >= min_rows and test_counts.get(v, 0) >= min_rows):
            rows = training_rows.where(slice_value(spec) == value)
            scores = test_scores.where(slice_value(spec) == value)
            found.setdefault(name, {})[value] = {
                "features": _profiles(rows, numeric, categorical),
                "scores": score_baseline(scores, threshold, score_column=PROBABILITY),
            }
    return found


def build_monitoring_baseline(
    training_rows: DataFrame,
    inputs: Sequence[str],
    test_scores: DataFrame,
    threshold: float,
    *,
    slices: Mapping[str, Mapping[str, Any]] | None = None,
    min_slice_rows: int = 200,
    min_positives: int = 30,
    min_negatives: int = 30,
) -> dict[str, Any]:
    """The baseline of one model: input profiles of ``training_rows``, score profile and reference
    performance of ``test_scores`` (columns ``probability`` and ``label``) at ``threshold``; the same
    profiles per slice value (``slices``: name → ``slice_specs`` entry over columns of both frames),
    where both sides have at least ``min_slice_rows`` rows (a slice's drift is measured against the
    slice, not the whole). The slice definitions are kept with the baseline: the version is
    monitored by the slices it was validated on, whatever the configuration says later."""
    numeric, categorical = split_inputs(training_rows, inputs)
    features = _profiles(training_rows, numeric, categorical)
    return {
        "inputs": list(inputs),
        "features": {column: features[column] for column in inputs},
        "scores": score_baseline(test_scores, threshold, score_column=PROBABILITY),
        "reference": reference_performance(test_scores, min_positives=min_positives, min_negatives=min_negatives),
        "slices": _slice_baselines(
            training_rows, test_scores, numeric, categorical, threshold, slices or {}, min_slice_rows
        ),
        "slice_specs": {name: dict(spec) for name, spec in (slices or {}).items()},
    }
