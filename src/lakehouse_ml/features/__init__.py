"""Feature store: feature contracts, contract validation and point-in-time lookups.

``FeatureLookup`` and ``build_training_set`` are the public API (modelled on Databricks'
Feature Engineering client); the features and training_set pipelines use them, and so can
notebooks.
"""

from lakehouse_ml.features.contracts import ContractError, FeatureContract, parse_contract
from lakehouse_ml.features.lookup import FeatureLookup, build_training_set

__all__ = ["ContractError", "FeatureContract", "FeatureLookup", "build_training_set", "parse_contract"]
