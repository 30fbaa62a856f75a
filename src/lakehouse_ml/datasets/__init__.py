"""Datasets of this project: Delta tables (Spark, pandas, metadata, versions), landing deliveries and
every feature table as one mapping, MLflow models with a signature computed by the node, the model registry, a node's own MLflow run, the online store, the Optuna study storage.

Each class is imported from its module when first named (``lakehouse_ml.datasets.SparkDeltaDataset``,
as the catalog names them): the scoring service loads its model through one of them without
importing the Spark engine or kedro-mlflow that others need.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "AuditTableDataset": "model_registry",
    "CandidateModelDataset": "mlflow_model",
    "CandidateRunDataset": "model_registry",
    "DeltaMetadataDataset": "delta",
    "DeltaVersions": "delta_versions",
    "FeatureTableInfoDataset": "feature_tables",
    "FeatureTablesDataset": "feature_tables",
    "KedroRunDataset": "kedro_run",
    "LandingDataset": "landing",
    "LandingFileDataset": "landing",
    "MlflowNodeRunDataset": "node_run",
    "MlflowSignedModelDataset": "signed_model",
    "ModelRegistryDataset": "model_registry",
    "OnlineStoreDataset": "online_store",
    "OptunaStorageDataset": "optuna_storage",
    "PandasDeltaDataset": "delta",
    "PandasFrameDeltaDataset": "frames",
    "RegisteredModelAliasDataset": "mlflow_model",
    "ReleaseContextDataset": "model_registry",
    "SimulatedLandingDataset": "simulated_landing",
    "SparkDeltaDataset": "delta",
    "SparkDeltaVersionsDataset": "delta_versions",
}
__all__ = sorted(_MODULES)


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
