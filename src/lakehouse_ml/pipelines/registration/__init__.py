"""Registration pipeline: the evaluated candidate as a registry version; the challenger if it passed."""

from lakehouse_ml.pipelines.registration.pipeline import create_pipeline

__all__ = ["create_pipeline"]
