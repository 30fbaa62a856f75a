"""The default run's release step: promote a challenger that passed every gate where policy allows."""

from lakehouse_ml.pipelines.auto_promotion.pipeline import create_pipeline

__all__ = ["create_pipeline"]
