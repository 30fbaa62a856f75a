"""Small pandas frames kept as Delta tables: written through Spark (so replace and merge keep their
semantics), read back with delta-rs (no Spark round-trip for a table that fits in memory)."""

from __future__ import annotations

from typing import Any

import pandas as pd
from kedro.io.core import AbstractDataset
from kedro_datasets._typing import TablePreview

from lakehouse_ml.datasets.delta import PandasDeltaDataset, SparkDeltaDataset, preview_table
from lakehouse_ml.engine import get_spark


class PandasFrameDeltaDataset(AbstractDataset[pd.DataFrame, pd.DataFrame]):
    """A Delta table of small frames: ``save`` takes pandas with the declared ``schema`` (Spark DDL) and
    writes it with ``SparkDeltaDataset``'s ``write_mode`` (``replace``/``merge`` keys included);
    ``load`` returns the whole table as pandas, an empty frame of the schema before the first write."""

    def __init__(self, *, filepath: str, schema: str, metadata: dict[str, Any] | None = None, **write: Any) -> None:
        self._filepath = filepath
        self._schema = schema
        self._writer = SparkDeltaDataset(filepath=filepath, **write)
        self._reader = PandasDeltaDataset(filepath=filepath)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "schema": self._schema}

    def load(self) -> pd.DataFrame:
        """The whole table as pandas."""
        if not self._reader._exists():
            return get_spark().createDataFrame([], self._schema).toPandas()
        return self._reader.load()

    def preview(self, nrows: int = 5) -> TablePreview:
        """The first ``nrows`` rows for kedro-viz (see ``lakehouse_ml.datasets.delta.preview_table``)."""
        return preview_table(self._filepath, nrows)

    def save(self, data: pd.DataFrame) -> None:
        """Write ``data`` (columns in the schema's order) through Spark."""
        spark = get_spark()
        empty = spark.createDataFrame([], self._schema)
        ordered = data.reindex(columns=empty.columns)
        rows = ordered.astype(object).where(ordered.notna(), None)  # NaN/NaT as null, not as values
        self._writer.save(spark.createDataFrame(rows, self._schema) if len(rows) else empty)
