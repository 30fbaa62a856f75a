"""Landing files as Kedro datasets: one folder per delivery, read as raw lines through Spark.

Raw lines (not parsed records) go to bronze so that a malformed row is kept byte for byte and
can be quarantined with its payload. Spark Connect has no ``input_file_name()`` on every engine,
so each file is read on its own and tagged with its path.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Callable

import fsspec
from kedro.io.core import AbstractDataset, DatasetError, get_protocol_and_path
from kedro_datasets.partitions import PartitionedDataset
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakehouse_ml.datasets.delta import table_uri
from lakehouse_ml.engine import get_spark

FORMATS = ("json", "csv")


class LandingFileDataset(AbstractDataset[None, DataFrame]):
    """One delivered file as a Spark DataFrame of raw lines: ``_raw``, ``_header``, ``_source_file``.

    For CSV the header line is kept in ``_header`` on every row (so a header that changes
    mid-stream is honoured per file) and dropped from the records.
    """

    def __init__(
        self,
        *,
        filepath: str,
        file_format: str = "json",
        encoding: str = "utf-8",
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if file_format not in FORMATS:
            raise DatasetError(
                f"Landing file '{filepath}': file_format must be one of {FORMATS}, "
                f"got {file_format!r}"
            )
        self._filepath = filepath
        self._format = file_format
        self._encoding = encoding
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "file_format": self._format}

    def _exists(self) -> bool:
        protocol, path = get_protocol_and_path(self._filepath)
        return fsspec.filesystem(protocol).exists(path)

    def load(self) -> DataFrame:
        """Read the file's lines lazily, tagged with the file path and the CSV header."""
        header = self._read_header() if self._format == "csv" else None
        lines = get_spark().read.text(table_uri(self._filepath))
        if header is not None:
            lines = lines.filter(F.col("value") != F.lit(header))
        return lines.select(
            F.col("value").alias("_raw"),
            F.lit(self._format).alias("_format"),
            F.lit(header).cast("string").alias("_header"),
            F.lit(self._filepath).alias("_source_file"),
        ).filter(F.trim(F.col("_raw")) != "")

    def save(self, data: None) -> None:
        raise DatasetError("LandingFileDataset is read-only: the source delivers landing files")

    def _read_header(self) -> str:
        with fsspec.open(self._filepath, "r", encoding=self._encoding) as handle:
            header = handle.readline().rstrip("\r\n")
        if not header:
            raise DatasetError(f"Landing file '{self._filepath}': CSV file has no header line")
        return header


class LandingDataset(PartitionedDataset):
    """All deliveries of one source: ``{partition id: loader}``; empty when nothing was delivered.

    A source that is not configured simply has no files, so the loop runs without it instead of
    failing with "No partitions found".
    """

    def load(self) -> dict[str, Callable[[], Any]]:
        """Return lazy loaders per delivered file, or ``{}`` when the folder is empty/missing."""
        if not self._list_partitions():
            return {}
        return super().load()
