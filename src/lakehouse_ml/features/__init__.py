"""Feature store: feature contracts, contract validation and point-in-time lookups.

``FeatureLookup`` and ``build_training_set`` are the public API (modelled on Databricks'
Feature Engineering client); the features and training_set pipelines use them, and so can
notebooks. ``build_training_set`` is imported when first named: it needs Spark, and the scoring
service reads contracts and lookups from this package without it.
"""

from __future__ import annotations

from typing import Any

from lakehouse_ml.features.contracts import ContractError, FeatureContract, parse_contract
from lakehouse_ml.features.feature_lookup import FeatureLookup

__all__ = ["ContractError", "FeatureContract", "FeatureLookup", "build_training_set", "parse_contract"]


def __getattr__(name: str) -> Any:
    if name == "build_training_set":
        from lakehouse_ml.features import lookup

        return getattr(lookup, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
