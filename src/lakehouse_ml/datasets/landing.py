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
    """One delivered file as a Spark DataFrame of raw lines: ``_raw``, ``_header``, ``_source_file``,
    ``_decode_error``.

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
        """Read the file's lines, tagged with the file path, the CSV header and any decoding error.

        A file in its declared encoding is read lazily by Spark. One with undecodable lines is
        split here: its valid lines as text, each undecodable line with its bytes escaped
        (``\\xff``) and ``_decode_error`` set, so ingest quarantines exactly those lines (and the
        quarantine gate judges the file by them). A binary file (NUL bytes) becomes one record
        naming it.
        """
        with fsspec.open(self._filepath, "rb") as handle:
            content = handle.read()
        try:
            content.decode(self._encoding)
        except UnicodeDecodeError:
            return self._undecodable(content)
        header = self._header(content.decode(self._encoding)) if self._format == "csv" else None
        lines = get_spark().read.text(table_uri(self._filepath))
        if header is not None:
            lines = lines.filter(F.col("value") != F.lit(header))
        return self._tagged(lines.select(F.col("value").alias("_raw"), F.lit(None).cast("string").alias("_decode_error")), header)

    def save(self, data: None) -> None:
        raise DatasetError("LandingFileDataset is read-only: the source delivers landing files")

    def _tagged(self, lines: DataFrame, header: str | None) -> DataFrame:
        return lines.select(
            "_raw",
            F.lit(self._format).alias("_format"),
            F.lit(header).cast("string").alias("_header"),
            F.lit(self._filepath).alias("_source_file"),
            "_decode_error",
        ).filter(F.trim(F.col("_raw")) != "")

    def _header(self, text: str) -> str:
        header = text.split("\n", 1)[0].rstrip("\r")
        if not header:
            raise DatasetError(f"Landing file '{self._filepath}': CSV file has no header line")
        return header

    def _undecodable(self, content: bytes) -> DataFrame:
        """The lines of a file with bytes invalid in its encoding: decodable ones as text, the others
        escaped with the reason; a binary file as one record."""
        rows: list[tuple[str, str | None]] = []
        for number, line in enumerate(content.split(b"\n"), start=1):
            line = line.rstrip(b"\r")
            try:
                rows.append((line.decode(self._encoding), None))
            except UnicodeDecodeError as error:
                escaped = line.decode(self._encoding, errors="backslashreplace")
                rows.append((
                    escaped,
                    f"line {number}: byte 0x{line[error.start]:02x} at offset {error.start} is not valid "
                    f"{self._encoding} (a source in another encoding sets the landing dataset's `encoding`)",
                ))
        if b"\x00" in content:
            # Text in any of the encodings a landing file may declare never holds NUL bytes: this is
            # a binary file with the right suffix, and its "lines" mean nothing.
            bad = sum(1 for _, problem in rows if problem)
            summary = f"{len(content)} bytes with NUL bytes, {bad} of {len(rows)} lines undecodable"
            rows, header = [(f"<{summary}>", f"the file is not {self._encoding} text ({summary})")], None
        elif self._format == "csv":
            header, first_problem = rows[0]
            rows = [r for r in rows[1:] if r[0] != header]
            if first_problem:
                # Without a readable header no line can be read: each keeps its bytes and the reason.
                rows = [(line, problem or f"the header's {first_problem}") for line, problem in rows]
        else:
            header = None
        lines = get_spark().createDataFrame(rows, "_raw string, _decode_error string")
        return self._tagged(lines, header)


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
