"""Monitoring: what was served (``served``), measured against each version's baseline (``drift``,
``performance``, ``baseline``) into three tables on one signal schema (``signals``,
``drift_metrics``, ``performance_metrics``, ``data_quality``), rules → actions (``rules``,
``actions``) and the report (``report``).

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
