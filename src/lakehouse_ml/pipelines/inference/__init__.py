"""Inference pipeline (batch): the champion model scores every customer active at the scoring date."""

from lakehouse_ml.pipelines.inference.pipeline import create_pipeline

__all__ = ["create_pipeline"]
