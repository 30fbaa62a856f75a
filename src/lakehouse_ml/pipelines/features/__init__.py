"""Features: contract-driven feature tables on Delta, refreshed incrementally."""

from lakehouse_ml.pipelines.features.pipeline import create_pipeline

__all__ = ["create_pipeline"]
