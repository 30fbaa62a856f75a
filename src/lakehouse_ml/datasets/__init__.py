"""Datasets of this project: Delta tables (Spark and pandas) and landing deliveries."""

from lakehouse_ml.datasets.delta import PandasDeltaDataset, SparkDeltaDataset
from lakehouse_ml.datasets.landing import LandingDataset, LandingFileDataset

__all__ = ["LandingDataset", "LandingFileDataset", "PandasDeltaDataset", "SparkDeltaDataset"]
