"""Tuning: rolling-origin folds over cutoffs and an Optuna study over model families."""

from lakehouse_ml.pipelines.tuning.pipeline import create_pipeline

__all__ = ["create_pipeline"]
