"""Promotion pipeline: the challenger becomes the champion (with approval where required)."""

from lakehouse_ml.pipelines.promotion.pipeline import create_pipeline

__all__ = ["create_pipeline"]
