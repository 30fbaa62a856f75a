"""Training nodes: refit the tuned configuration as the candidate model, evaluate it on the held-out
test window, and package it (model with signature, metrics, slice metrics, plots, provenance).

The split is the tuning pipeline's (same ``params:tuning``), so the test window is never one the
study saw. The refit window ends ``gap_cutoffs`` before the first test cutoff: a deployed model
only knows labels whose horizon has passed, and the test window simulates that deployment.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np
import pandas as pd
from sklearn.inspection import permutation_importance

from lakehouse_ml.features.tables import CUTOFF, ENTITY, LABEL, SPEC_PROPERTY, contract_configs
from lakehouse_ml.modeling.folds import in_key_order, time_folds
from lakehouse_ml.modeling.metrics import (
    binary_metrics,
    choose_threshold,
    confusion_counts,
    flat_slice_metrics,
    slice_metrics,
    slice_specs,
    slice_values,
)
from lakehouse_ml.modeling.models import build_model_pipeline, feature_columns
from lakehouse_ml.modeling.plots import (
    calibration_figure,
    confusion_figure,
    importance_figure,
    optuna_history_figure,
    pr_figure,
    roc_figure,
)

logger = logging.getLogger(__name__)

SCORE = "score"
SLICE_METRICS = ["roc_auc", "pr_auc", "log_loss", "brier", "calibration_error", "precision", "recall", "positive_rate"]


def _iso(values: list[Any]) -> list[str]:
    return [pd.Timestamp(v).isoformat() for v in values]


def _features(plan: dict[str, Any]) -> list[str]:
    return [*plan["columns"]["numeric"], *plan["columns"]["categorical"]]


def _model(plan: dict[str, Any]):
    """An unfitted pipeline of the plan's family, hyperparameters and seed."""
    columns = plan["columns"]
    params = {**plan["model_params"], "random_state": plan["seed"]}
    return build_model_pipeline(
        plan["family"], params, columns["numeric"], columns["categorical"], columns["imputation"]
    )


def _rows(frame: pd.DataFrame, cutoffs: list[Any]) -> pd.DataFrame:
    return in_key_order(frame[frame[CUTOFF].isin(pd.to_datetime(cutoffs, utc=True))])


def plan_candidate(
    training_set: pd.DataFrame,
    study_result: dict[str, Any],
    feature_tables: dict[str, Any],
    on_demand_features: dict[str, Any] | None,
    tuning: dict[str, Any],
) -> dict[str, Any]:
    """The best configuration of the study with the tuning split: folds, test window and refit window."""
    if not study_result.get("best_family"):
        raise ValueError(
            f"study {study_result.get('study_name')!r} has no completed trial "
            f"(trial counts: {study_result.get('trial_counts')}); run the tuning pipeline first"
        )
    gap = int(tuning.get("gap_cutoffs", 0))
    folds, test = time_folds(training_set[CUTOFF].tolist(), int(tuning["n_folds"]), int(tuning["test_cutoffs"]), gap)
    before_test = sorted(c for c in set(training_set[CUTOFF]) if c < min(test))
    refit = before_test[: len(before_test) - gap]
    if not refit:
        raise ValueError(f"no training cutoff is left before the test window {_iso(test)} with a gap of {gap} cutoffs")
    plan = {
        "study_name": study_result["study_name"],
        "best_trial": study_result["best_trial"],
        "validation_roc_auc": study_result["best_value"],
        "family": study_result["best_family"],
        "model_params": study_result["best_model_params"],
        "seed": int(tuning["seed"]),
        # The inputs the trials were fitted on (a study stored before they were recorded: the contracts').
        "columns": study_result.get("columns")
        or feature_columns(list(training_set.columns), contract_configs(feature_tables), on_demand_features),
        "folds": [(_iso(train), _iso(valid)) for train, valid in folds],
        "train_cutoffs": _iso(refit),
        "test_cutoffs": _iso(test),
        "gap_cutoffs": gap,
    }
    logger.info(
        "candidate: %s (trial %s, validation ROC AUC %.4f), refit on %d cutoffs %s..%s, test on %s",
        plan["family"],
        plan["best_trial"],
        plan["validation_roc_auc"],
        len(refit),
        plan["train_cutoffs"][0],
        plan["train_cutoffs"][-1],
        ", ".join(plan["test_cutoffs"]),
    )
    return plan


def choose_operating_threshold(
    training_set: pd.DataFrame, plan: dict[str, Any], training: dict[str, Any]
) -> dict[str, Any]:
    """The operating threshold, chosen on the out-of-fold validation scores of the best configuration."""
    features, labels, scores = _features(plan), [], []
    for train_cutoffs, valid_cutoffs in plan["folds"]:
        train, valid = _rows(training_set, train_cutoffs), _rows(training_set, valid_cutoffs)
        model = _model(plan).fit(train[features], train[LABEL])
        labels.append(valid[LABEL].to_numpy())
        scores.append(model.predict_proba(valid[features])[:, 1])
    chosen = choose_threshold(np.concatenate(labels), np.concatenate(scores), training["operating_threshold"])
    chosen["validation_rows"] = int(sum(len(part) for part in labels))
    logger.info(
        "candidate: operating threshold %.4f (%s on %d validation rows: precision %.3f, recall %.3f)",
        chosen["threshold"],
        chosen["strategy"],
        chosen["validation_rows"],
        chosen["precision"],
        chosen["recall"],
    )
    return chosen


def refit_candidate(training_set: pd.DataFrame, plan: dict[str, Any], training: dict[str, Any]) -> dict[str, Any]:
    """The plan's pipeline fitted on the refit window, with an input example of raw feature rows."""
    started = time.monotonic()
    rows = _rows(training_set, plan["train_cutoffs"])
    model = _model(plan).fit(rows[_features(plan)], rows[LABEL])
    example = rows[_features(plan)].head(int(training.get("input_example_rows", 5))).reset_index(drop=True)
    # Numeric inputs are doubles in the signature whatever this data's dtype: a feature without
    # nulls arrives as integers (e.g. days_since_last_order), and serving sends doubles and nulls.
    numeric = [c for c in plan["columns"]["numeric"] if c in example.columns]
    example[numeric] = example[numeric].astype("float64")
    logger.info("candidate: %s refit on %d rows in %.1fs", plan["family"], len(rows), time.monotonic() - started)
    return {
        "model": model,
        "input_example": example,
        "train_rows": len(rows),
        "train_positive_rate": float(rows[LABEL].mean()),
    }


def _importance(
    model: Any, rows: pd.DataFrame, features: list[str], config: dict[str, Any], seed: int
) -> dict[str, dict[str, float]]:
    """Permutation importance of each raw input column on (a seeded sample of) the test rows."""
    sample = rows.sample(n=min(len(rows), int(config.get("max_rows", 4000))), random_state=seed)
    result = permutation_importance(
        model,
        sample[features],
        sample[LABEL],
        scoring="roc_auc",
        n_repeats=int(config.get("n_repeats", 3)),
        random_state=seed,
        n_jobs=1,
    )
    return {
        name: {"mean": float(mean), "std": float(std)}
        for name, mean, std in zip(features, result.importances_mean, result.importances_std)
    }


def evaluate_candidate(
    fit: dict[str, Any],
    training_set: pd.DataFrame,
    plan: dict[str, Any],
    threshold: dict[str, Any],
    training: dict[str, Any],
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Scores of the test window and its metrics: overall, per slice and permutation importance."""
    rows = _rows(training_set, plan["test_cutoffs"]).reset_index(drop=True)
    features, cut = _features(plan), float(threshold["threshold"])
    scores = rows[[ENTITY, CUTOFF, LABEL]].copy()
    scores[SCORE] = fit["model"].predict_proba(rows[features])[:, 1]
    slices = slice_specs(training.get("slices"), list(rows.columns))
    for name, spec in slices.items():
        scores[name] = slice_values(rows, spec)
    evaluation = {
        "metrics": binary_metrics(scores[LABEL], scores[SCORE], cut),
        "confusion": confusion_counts(scores[LABEL], scores[SCORE], cut),
        "slices": slice_metrics(scores, LABEL, SCORE, {n: n for n in slices}, cut, int(training["min_slice_rows"])),
        "importance": _importance(fit["model"], rows, features, training.get("importance") or {}, plan["seed"]),
    }
    measured = evaluation["metrics"]
    logger.info(
        "candidate: test window %d rows (%.1f%% positive): ROC AUC %.4f, PR AUC %.4f, log loss %.4f, "
        "Brier %.4f, calibration error %.4f, precision %.3f / recall %.3f at %.3f",
        len(scores),
        100 * measured.get("positive_rate", float("nan")),
        measured.get("roc_auc", float("nan")),
        measured.get("pr_auc", float("nan")),
        measured["log_loss"],
        measured["brier"],
        measured["calibration_error"],
        measured["precision"],
        measured["recall"],
        cut,
    )
    return scores, evaluation


def _metric_entries(figures: dict[str, float]) -> dict[str, dict[str, float]]:
    """kedro-mlflow's metrics format."""
    return {
        name: {"value": float(value), "step": 0}
        for name, value in figures.items()
        if value is not None and np.isfinite(value)
    }


def _training_set_provenance(info: dict[str, Any]) -> dict[str, Any]:
    spec = json.loads((info.get("properties") or {}).get(SPEC_PROPERTY) or "{}")
    return {"path": info.get("path"), "version": info.get("version"), "spec": spec}


def _signature(fit: dict[str, Any]) -> Any:
    """Signature from the raw input example to the positive-class probability columns."""
    from mlflow.models import infer_signature

    example = fit["input_example"]
    return infer_signature(example, fit["model"].predict_proba(example))


def log_candidate(
    fit: dict[str, Any],
    plan: dict[str, Any],
    threshold: dict[str, Any],
    scores: pd.DataFrame,
    evaluation: dict[str, Any],
    study_result: dict[str, Any],
    training_set_info: dict[str, Any],
    run: dict[str, Any] | None,
) -> dict[str, Any]:
    """The candidate's outputs: model, metrics, plots, slice report, Optuna history, provenance, pointer.

    Every output is logged into ``run``, this node's MLflow run (``None`` without tracking), so the
    candidate is one run in the MLflow UI; the provenance names it, its commit and environment.
    """
    measured = evaluation["metrics"]
    figures = {
        **measured,
        **flat_slice_metrics(evaluation["slices"], SLICE_METRICS),
        "validation_roc_auc": plan["validation_roc_auc"],
        "validation_precision": threshold["precision"],
        "validation_recall": threshold["recall"],
        "train_rows": fit["train_rows"],
    }
    labels, probabilities = scores[LABEL].to_numpy(), scores[SCORE].to_numpy()
    plots = {
        "roc_plot": roc_figure(labels, probabilities, measured.get("roc_auc")),
        "pr_plot": pr_figure(labels, probabilities, measured.get("pr_auc"), threshold["threshold"]),
        "calibration_plot": calibration_figure(labels, probabilities, measured["calibration_error"]),
        "confusion_matrix_plot": confusion_figure(evaluation["confusion"], threshold["threshold"]),
        "feature_importance_plot": importance_figure(evaluation["importance"]),
    }
    run = run or {}
    run_id = run.get("run_id")
    provenance = {
        "run_id": run_id,
        "model_uri": f"runs:/{run_id}/model" if run_id else None,
        "git_sha": run.get("git_sha"),
        "env": run.get("env"),
        "training_set": _training_set_provenance(training_set_info),
        "study": {
            k: study_result[k]
            for k in ("study_name", "best_trial", "best_value", "best_params", "n_trials", "trial_counts")
        },
        "model": {"family": plan["family"], "params": plan["model_params"], "seed": plan["seed"]},
        "features": plan["columns"],
        "split": {k: plan[k] for k in ("folds", "train_cutoffs", "test_cutoffs", "gap_cutoffs")},
        "operating_threshold": threshold,
        "test_metrics": measured,
    }
    pointer = {
        k: provenance[k] for k in ("run_id", "model_uri", "git_sha", "env", "operating_threshold", "test_metrics")
    }
    pointer["training_set"] = {k: provenance["training_set"][k] for k in ("path", "version")}
    pointer["split"] = provenance["split"]
    model = {"model": fit["model"], "input_example": fit["input_example"], "signature": _signature(fit)}
    return {
        "model": model,
        "metrics": _metric_entries(figures),
        **plots,
        "optuna_history": optuna_history_figure(study_result.get("trials", [])),
        "slice_metrics": evaluation["slices"],
        "provenance": provenance,
        "pointer": pointer,
    }
