"""Monitoring nodes: served rows → windows → drift, performance and data quality → rules → actions.

What was served comes from two places: the batch predictions (``ml.churn_predictions``, one
window per scoring date) and the scoring service's inference log (``monitoring.inference_log``,
served rows only, windowed by the day they were logged). Each served model version is compared
with its own baseline (``monitoring.baselines``, written at evaluation) and with its previous
window. The logic lives in ``lakehouse_ml.monitoring`` (``served``, ``drift_metrics``,
``performance_metrics``, ``data_quality``, ``actions``, ``report``); each node reads its parameters
and hands them over.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame

from lakehouse_ml.monitoring.actions import decided_actions, execution_plan, promotion_times, with_outcomes
from lakehouse_ml.monitoring.data_quality import quality_signals
from lakehouse_ml.monitoring.drift_metrics import drift_signals
from lakehouse_ml.monitoring.performance_metrics import performance_signals
from lakehouse_ml.monitoring.report import monitoring_report, run_summary
from lakehouse_ml.monitoring.served import churn_labels, in_scope, monitored_baselines, parsed_inputs, served_rows
from lakehouse_ml.monitoring.signals import united_signals

logger = logging.getLogger(__name__)


def collect_served_rows(predictions: DataFrame, inference_log: DataFrame, monitoring: dict[str, Any]) -> DataFrame:
    """Batch predictions and served online rows of the latest ``lookback_windows`` windows, windowed."""
    return served_rows(
        predictions,
        inference_log,
        monitoring["sources"],
        int(monitoring["window_days"]),
        int(monitoring["lookback_windows"]),
    )


def served_baselines(
    served: DataFrame, baselines: DataFrame, registry_state: dict[str, Any]
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Per served model version its baseline, and this run's scope (monitored versions, windows recomputed)."""
    return monitored_baselines(served, baselines, registry_state)


def served_inputs(served: DataFrame, baselines: dict[str, dict[str, Any]]) -> DataFrame:
    """Served rows of monitored versions with their model inputs parsed into columns."""
    return parsed_inputs(served, baselines)


def compute_drift(inputs: DataFrame, baselines: dict[str, dict[str, Any]], monitoring: dict[str, Any]) -> pd.DataFrame:
    """The ``drift_metrics`` rows: drift per input and of the predictions, against the baseline and the previous window."""
    return drift_signals(inputs, baselines, monitoring["drift"])


def label_served_rows(served: DataFrame, orders: DataFrame, training_set: dict[str, Any]) -> DataFrame:
    """Served rows with the training set's churn label once its horizon is observed (null before)."""
    return churn_labels(served, orders, int(training_set["spine"]["horizon_days"]))


def compute_performance(
    labeled: DataFrame, baselines: dict[str, dict[str, Any]], monitoring: dict[str, Any]
) -> pd.DataFrame:
    """The ``performance_metrics`` rows: realized performance and its label-free estimate."""
    return performance_signals(labeled, baselines, monitoring["performance"])


def compute_data_quality(
    served: DataFrame,
    drift: pd.DataFrame,
    rejected: DataFrame,
    baselines: dict[str, dict[str, Any]],
    scope: dict[str, Any],
    monitoring: dict[str, Any],
) -> pd.DataFrame:
    """The ``data_quality`` rows: rejected, flagged, null-rate, unseen-category and schema-change signals."""
    return quality_signals(
        served, drift, rejected, baselines, scope, int(monitoring["window_days"]), monitoring["quality"]
    )


def decide_actions(  # noqa: PLR0913
    drift: pd.DataFrame,
    performance: pd.DataFrame,
    quality: pd.DataFrame,
    scope: dict[str, Any],
    recorded: pd.DataFrame,
    promotions: DataFrame,
    registry_state: dict[str, Any],
    registry: dict[str, Any],
    rules: list[dict[str, Any]],
    monitoring: dict[str, Any],
    context: dict[str, Any],
) -> pd.DataFrame:
    """Fire the rules on this run's signals under the environment's policy (alert or execute)."""
    signals = united_signals(*(in_scope(frame, scope) for frame in (drift, performance, quality)))
    promoted = promotion_times(promotions, registry_state["name"])
    policy = monitoring["actions"]["policy"]
    return decided_actions(signals, recorded, promoted, registry_state, registry, rules, policy, context)


def plan_monitoring_actions(
    decided: pd.DataFrame, registry_state: dict[str, Any], registry: dict[str, Any], governance: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Registry actions with their release event, a retraining request, and each action's outcome."""
    return execution_plan(decided, registry_state, registry, governance)


def record_actions(decided: pd.DataFrame, outcome: dict[str, Any], registry_after: dict[str, Any]) -> pd.DataFrame:
    """The fired actions with their final status (executed, failed with the reason, alerted or blocked)."""
    return with_outcomes(decided, outcome, registry_after)


def build_monitoring_report(
    drift: pd.DataFrame,
    performance: pd.DataFrame,
    quality: pd.DataFrame,
    actions: pd.DataFrame,
    scope: dict[str, Any],
    context: dict[str, Any],
) -> tuple[dict[str, Any], str]:
    """The run's charts (drift, score distribution, performance with bands, quality) and an HTML page."""
    frames = [in_scope(frame, scope) for frame in (drift, performance, quality)]
    title = f"Monitoring of {context['catalog']} at {context['at']:%Y-%m-%d %H:%M} UTC"
    report = monitoring_report(*frames, in_scope(actions, scope), title=title)
    return {f"{name}.png": figure for name, figure in report["figures"].items()}, report["html"]


def summarise_monitoring(
    drift: pd.DataFrame, performance: pd.DataFrame, quality: pd.DataFrame, actions: pd.DataFrame, scope: dict[str, Any]
) -> dict[str, Any]:
    """MLflow metrics of the run: windows, acting signals per table, actions fired and executed."""
    summary = run_summary(*(in_scope(frame, scope) for frame in (drift, performance, quality, actions)))
    logger.info("monitoring: %s", ", ".join(f"{k.removeprefix('monitoring.')}={v}" for k, v in summary.items()))
    return {name: {"value": float(value), "step": 0} for name, value in summary.items()}
