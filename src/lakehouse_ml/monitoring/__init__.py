"""Monitoring: drift of features and predictions between a baseline and a monitoring window.

``numeric_baseline`` / ``categorical_baseline`` profile a baseline once (small JSON-able dicts);
``feature_drift`` and ``prediction_drift`` compare a window against it with Spark aggregations.
See ``lakehouse_ml.monitoring.drift`` for the formulas.
"""

from lakehouse_ml.monitoring.drift import (
    DEFAULT_THRESHOLDS,
    EPSILON,
    NULL_CATEGORY,
    SMALL_WINDOW_ROWS,
    categorical_baseline,
    feature_drift,
    js_distance,
    numeric_baseline,
    prediction_drift,
    psi,
    quantile_wasserstein,
    score_baseline,
)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "EPSILON",
    "NULL_CATEGORY",
    "SMALL_WINDOW_ROWS",
    "categorical_baseline",
    "feature_drift",
    "js_distance",
    "numeric_baseline",
    "prediction_drift",
    "psi",
    "quantile_wasserstein",
    "score_baseline",
]
