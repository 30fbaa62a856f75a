"""The monitoring pipeline: drift, performance and data quality of what was served, and the actions they call for."""

from lakehouse_ml.pipelines.monitoring.pipeline import create_pipeline

__all__ = ["create_pipeline"]
