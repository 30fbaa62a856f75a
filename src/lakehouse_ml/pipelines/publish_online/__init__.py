"""Publish-online pipeline: the latest served feature rows per customer into the online store."""

from lakehouse_ml.pipelines.publish_online.pipeline import create_pipeline

__all__ = ["create_pipeline"]
