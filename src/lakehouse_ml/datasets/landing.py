"""Landing files as Kedro datasets: one folder per delivery, read as raw lines through Spark.

Raw lines (not parsed records) go to bronze so that a malformed row is kept byte for byte and
can be quarantined with its payload. Many files are read in one engine scan by a Python data
source: a plan with one relation per file grows with the feed and overflows the client's
recursion limit at a few hundred files; ``input_file_name()`` and ``_metadata.file_path`` do not
exist on every Spark Connect engine; and Sail 0.7.2's ``binaryFile`` source returns a file twice
when it splits the scan (a file larger than a split, or one at the boundary of two partitions).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
from kedro.io.core import AbstractDataset, DatasetError, get_protocol_and_path
from kedro_datasets.partitions import PartitionedDataset
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.datasource import DataSource, DataSourceReader, InputPartition

from lakehouse_ml.engine import get_spark

FORMATS = ("json", "csv")
LINES_SCHEMA = "_partition_id string, _raw string, _header string, _source_file string, _decode_error string"
LINES_COLUMNS = [c.split()[0] for c in LINES_SCHEMA.split(", ")]
# Read partitions per scan (fewer if fewer files): each partition streams its files one by one,
# so its memory is one file's, while every partition costs the engine a fixed overhead (measured on
# Sail: 4,000 files in 250 partitions peaked at 2.0 GB, in 16 at 0.5 GB). Sail reads them all at
# once, and each also feeds a Delta writer of its own, so the peak is this many files in flight and
# this many files being written. The files are decoded in Python, one thread at a time, so beyond
# two (one decoding while the other's rows are written) more buy no speed: landing scale 20's
# sessions (24 MB files) into Delta took 16.0 s at a 2.0 GB peak with 4, 15.9 s at 1.4 GB with 2,
# 18.2 s at 1.1 GB with 1.
READ_PARTITIONS = 2
# What Spark's text source splits lines on (and Sail's, checked): CRLF, CR or LF.
_LINE_BREAK = r"\r\n|\r|\n"


def _check_format(filepath: str, file_format: str) -> None:
    if file_format not in FORMATS:
        raise DatasetError(f"Landing file '{filepath}': file_format must be one of {FORMATS}, got {file_format!r}")


def _csv_header(text: str, filepath: str) -> str:
    header = text.split("\n", 1)[0].rstrip("\r")
    if not header:
        raise DatasetError(f"Landing file '{filepath}': CSV file has no header line")
    return header


def _undecodable_lines(
    content: bytes, file_format: str, encoding: str
) -> tuple[list[tuple[str, str | None]], str | None]:
    """The lines of a file with bytes invalid in its encoding, and its CSV header: decodable ones as
    text, the others escaped (``\\xff``) with the reason; a binary file as one record."""
    rows: list[tuple[str, str | None]] = []
    for number, line in enumerate(content.split(b"\n"), start=1):
        line = line.rstrip(b"\r")
        try:
            rows.append((line.decode(encoding), None))
        except UnicodeDecodeError as error:
            escaped = line.decode(encoding, errors="backslashreplace")
            rows.append(
                (
                    escaped,
                    f"line {number}: byte 0x{line[error.start]:02x} at offset {error.start} is not valid "
                    f"{encoding} (a source in another encoding sets the landing dataset's `encoding`)",
                )
            )
    if b"\x00" in content:
        # Text in any of the encodings a landing file may declare never holds NUL bytes: this is
        # a binary file with the right suffix, and its "lines" mean nothing.
        bad = sum(1 for _, problem in rows if problem)
        summary = f"{len(content)} bytes with NUL bytes, {bad} of {len(rows)} lines undecodable"
        return [(f"<{summary}>", f"the file is not {encoding} text ({summary})")], None
    if file_format != "csv":
        return rows, None
    header, first_problem = rows[0]
    rows = [r for r in rows[1:] if r[0] != header]
    if first_problem:
        # Without a readable header no line can be read: each keeps its bytes and the reason.
        rows = [(line, problem or f"the header's {first_problem}") for line, problem in rows]
    return rows, header


def decode_landing_file(
    content: bytes, file_format: str, encoding: str, filepath: str
) -> tuple[pa.Array, str | None, pa.Array]:
    """Split one delivered file into raw lines; return them, its CSV header and per line the
    decoding error (null for a line read as text).

    A file in its declared encoding is split where Spark's text source splits (and a CSV file
    loses its header lines); one with undecodable bytes keeps each line with the reason, so ingest
    quarantines exactly those lines (and the quarantine gate judges the file by them).
    """
    try:
        text = content.decode(encoding)
    except UnicodeDecodeError:
        rows, header = _undecodable_lines(content, file_format, encoding)
        return (
            pa.array([line for line, _ in rows], pa.string()),
            header,
            pa.array([problem for _, problem in rows], pa.string()),
        )
    if not text.strip():
        # An empty delivery (no header either) holds no record: audited with 0 rows, never a failure.
        return pa.array([], pa.string()), None, pa.array([], pa.string())
    header = _csv_header(text, filepath) if file_format == "csv" else None
    lines = pc.split_pattern_regex(pa.array([text], pa.string()), _LINE_BREAK).flatten()
    if header is not None:
        lines = lines.filter(pc.not_equal(lines, pa.scalar(header, pa.string())))
    return lines, header, pa.nulls(len(lines), pa.string())


class LandingFilesSource(DataSource):
    """Spark (Python) data source of landing files as raw lines; option ``files``: JSON
    ``[[partition id, path], …]``, plus ``file_format`` and ``encoding``."""

    @classmethod
    def name(cls) -> str:
        return "lakehouse_ml_landing"

    def schema(self) -> str:
        return LINES_SCHEMA

    def reader(self, schema: Any) -> DataSourceReader:
        return LandingFilesReader(self.options)


class LandingFilesReader(DataSourceReader):
    """Reads whole files on the engine's workers, a group of files per partition: each file is read
    exactly once and its bytes never reach the driver."""

    def __init__(self, options: Mapping[str, str]) -> None:
        self._files = [tuple(pair) for pair in json.loads(options["files"])]
        self._format = options.get("file_format", "json")
        self._encoding = options.get("encoding", "utf-8")

    def partitions(self) -> list[InputPartition]:
        count = max(1, min(READ_PARTITIONS, len(self._files)))
        # Round-robin: daily files of similar size give partitions of similar size.
        return [InputPartition(self._files[i::count]) for i in range(count)]

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        for partition_id, filepath in partition.value:
            with fsspec.open(filepath, "rb") as handle:
                content = handle.read()
            lines, header, errors = decode_landing_file(content, self._format, self._encoding, filepath)
            yield pa.RecordBatch.from_arrays(
                [
                    pa.array([partition_id] * len(lines), pa.string()),
                    lines,
                    pa.array([header] * len(lines), pa.string()),
                    pa.array([filepath] * len(lines), pa.string()),
                    errors,
                ],
                names=LINES_COLUMNS,
            )


def read_landing_files(files: Mapping[str, str], file_format: str, encoding: str) -> DataFrame:
    """Read many landing files in one engine scan, lazily, as raw lines.

    ``files`` maps a partition id to its file path. Columns: ``_partition_id``, ``_raw``,
    ``_format``, ``_header`` (CSV: on every row, so a header that changes mid-stream is honoured
    per file), ``_source_file`` (the path as given), ``_decode_error``; blank lines are dropped.
    """
    spark = get_spark()
    if not files:
        lines = spark.createDataFrame([], LINES_SCHEMA)
    else:
        spark.dataSource.register(LandingFilesSource)
        lines = (
            spark.read.format(LandingFilesSource.name())
            .option("files", json.dumps(list(files.items())))
            .option("file_format", file_format)
            .option("encoding", encoding)
            .load()
        )
    return lines.select(
        "_partition_id",
        "_raw",
        F.lit(file_format).alias("_format"),
        "_header",
        "_source_file",
        "_decode_error",
    ).filter(F.trim(F.col("_raw")) != "")


class LandingFileDataset(AbstractDataset[None, DataFrame]):
    """One delivered file as a Spark DataFrame of raw lines: ``_raw``, ``_format``, ``_header``,
    ``_source_file``, ``_decode_error``.

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
        _check_format(filepath, file_format)
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
        """Read the file's lines, tagged with the file path, the CSV header and any decoding error."""
        return read_landing_files({self._filepath: self._filepath}, self._format, self._encoding).drop("_partition_id")

    def save(self, data: None) -> None:
        raise DatasetError("LandingFileDataset is read-only: the source delivers landing files")


class LandingDeliveries(Mapping[str, Callable[[], DataFrame]]):
    """The delivered files of one source: ``{partition id: loader of that file}``, and
    :meth:`read` for many of them in one engine scan."""

    def __init__(self, files: Mapping[str, str], file_format: str = "json", encoding: str = "utf-8") -> None:
        self._files = dict(files)
        self._format = file_format
        self._encoding = encoding

    def __getitem__(self, partition_id: str) -> Callable[[], DataFrame]:
        return LandingFileDataset(
            filepath=self._files[partition_id], file_format=self._format, encoding=self._encoding
        ).load

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)

    def read(self, partition_ids: Iterable[str]) -> DataFrame:
        """The raw lines of these deliveries, with ``_partition_id`` (see :func:`read_landing_files`)."""
        wanted = list(partition_ids)
        missing = [pid for pid in wanted if pid not in self._files]
        if missing:
            raise KeyError(
                f"landing: no delivered file for partition ids {missing[:5]} "
                f"({len(missing)} in all); delivered are e.g. {list(self._files)[:3]}"
            )
        return read_landing_files({pid: self._files[pid] for pid in wanted}, self._format, self._encoding)


class LandingDataset(PartitionedDataset):
    """All deliveries of one source as :class:`LandingDeliveries`; empty when nothing was delivered.

    A source that is not configured simply has no files, so the loop runs without it instead of
    failing with "No partitions found".
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not issubclass(self._dataset_type, LandingFileDataset):
            raise DatasetError(
                f"Landing dataset '{self._path}': dataset.type must be "
                f"lakehouse_ml.datasets.LandingFileDataset, got {self._dataset_type.__qualname__}"
            )
        _check_format(self._path, self._dataset_config.get("file_format", "json"))

    def load(self) -> LandingDeliveries:
        """List the delivered files (a fresh listing on every load); no file is read here."""
        self._invalidate_caches()
        files = {self._path_to_partition(path): self._join_protocol(path) for path in self._list_partitions()}
        return LandingDeliveries(
            files,
            file_format=self._dataset_config.get("file_format", "json"),
            encoding=self._dataset_config.get("encoding", "utf-8"),
        )
