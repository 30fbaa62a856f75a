"""Deterministic simulator of a subscription e-commerce business writing landing files."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
