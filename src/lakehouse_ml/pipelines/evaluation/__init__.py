"""Evaluation pipeline: the candidate against the gates and the champion."""

from lakehouse_ml.pipelines.evaluation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
