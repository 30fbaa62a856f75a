"""Datasets of this project: Delta tables (Spark, pandas, metadata, versions), landing deliveries and
every feature table as one mapping, MLflow models with a signature computed by the node, the model registry, the online store, the Optuna study storage."""

from lakehouse_ml.datasets.delta import DeltaMetadataDataset, PandasDeltaDataset, SparkDeltaDataset
from lakehouse_ml.datasets.delta_versions import DeltaVersions, SparkDeltaVersionsDataset
from lakehouse_ml.datasets.feature_tables import FeatureTableInfoDataset, FeatureTablesDataset
from lakehouse_ml.datasets.frames import PandasFrameDeltaDataset
from lakehouse_ml.datasets.kedro_run import KedroRunDataset
from lakehouse_ml.datasets.landing import LandingDataset, LandingFileDataset
from lakehouse_ml.datasets.mlflow_model import (
    CandidateModelDataset,
    MlflowSignedModelDataset,
    RegisteredModelAliasDataset,
)
from lakehouse_ml.datasets.online_store import OnlineStoreDataset
from lakehouse_ml.datasets.optuna_storage import OptunaStorageDataset
from lakehouse_ml.datasets.simulated_landing import SimulatedLandingDataset
from lakehouse_ml.datasets.model_registry import AuditTableDataset, CandidateRunDataset, ModelRegistryDataset, ReleaseContextDataset

__all__ = [
    "AuditTableDataset",
    "CandidateModelDataset",
    "CandidateRunDataset",
    "DeltaMetadataDataset",
    "DeltaVersions",
    "FeatureTableInfoDataset",
    "FeatureTablesDataset",
    "KedroRunDataset",
    "LandingDataset",
    "LandingFileDataset",
    "MlflowSignedModelDataset",
    "ModelRegistryDataset",
    "OnlineStoreDataset",
    "OptunaStorageDataset",
    "PandasDeltaDataset",
    "PandasFrameDeltaDataset",
    "RegisteredModelAliasDataset",
    "ReleaseContextDataset",
    "SimulatedLandingDataset",
    "SparkDeltaDataset",
    "SparkDeltaVersionsDataset",
]
