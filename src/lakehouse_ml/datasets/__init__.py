"""Datasets of this project: Delta tables (Spark, pandas, metadata) and landing deliveries."""

from lakehouse_ml.datasets.delta import DeltaMetadataDataset, PandasDeltaDataset, SparkDeltaDataset
from lakehouse_ml.datasets.landing import LandingDataset, LandingFileDataset

__all__ = [
    "DeltaMetadataDataset",
    "LandingDataset",
    "LandingFileDataset",
    "PandasDeltaDataset",
    "SparkDeltaDataset",
]
