"""Ingest: landing deliveries → bronze → silver (+ quarantine) → gold."""

from lakehouse_ml.pipelines.ingest.pipeline import create_pipeline

__all__ = ["create_pipeline"]
