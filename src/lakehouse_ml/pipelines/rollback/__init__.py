"""Rollback pipeline: the previous champion becomes the champion again."""

from lakehouse_ml.pipelines.rollback.pipeline import create_pipeline

__all__ = ["create_pipeline"]
