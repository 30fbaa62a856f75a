"""Datasets of this project: Delta tables (Spark, pandas, metadata), landing deliveries and
MLflow models with a signature computed by the node."""

from lakehouse_ml.datasets.delta import DeltaMetadataDataset, PandasDeltaDataset, SparkDeltaDataset
from lakehouse_ml.datasets.landing import LandingDataset, LandingFileDataset
from lakehouse_ml.datasets.mlflow_model import (
    CandidateModelDataset,
    MlflowSignedModelDataset,
    RegisteredModelAliasDataset,
)

__all__ = [
    "CandidateModelDataset",
    "DeltaMetadataDataset",
    "LandingDataset",
    "LandingFileDataset",
    "MlflowSignedModelDataset",
    "PandasDeltaDataset",
    "RegisteredModelAliasDataset",
    "SparkDeltaDataset",
]
