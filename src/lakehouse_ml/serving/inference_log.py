"""The inference log: every scored row, buffered in memory and appended to ``<catalog>.monitoring.inference_log``.

Requests append a :class:`LogBatch`, its features copied into one array of values
(:class:`FeatureRows`, tens of microseconds); turning rows into Arrow and JSON happens on the flush
thread, off the response path. A flush runs every
``flush_rows`` rows or ``flush_interval_s`` seconds and on shutdown, so a crash loses at most the
unflushed rows. Each flush is an append recorded in the same Delta commit as a transaction of its
writer (Delta's ``txn`` action: an id per service process, a version per flush), so a flush that
failed is retried as the same version and adds nothing when its commit had landed (a lost
acknowledgement). Rows wait for the next flush while writes fail, up to ``max_buffer_rows``.

An append reads nothing of the table: a MERGE on the row keys cost each flush more as the day's
partition grew (15 ms, then 100 ms of CPU for 1,000 rows after 60 flushes, taken from requests).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from lakehouse_ml.serving.config import InferenceLogSettings

logger = logging.getLogger(__name__)


def _json_default(value: Any) -> Any:
    """A NumPy scalar as the Python value pandas' ``to_dict`` boxed it to; anything else as text."""
    if isinstance(value, np.generic) and not isinstance(value, (np.datetime64, np.timedelta64)):
        return value.item()
    return str(value)


# json.dumps(record, default=...) builds an encoder per call: one, shared, gives the same text.
_ENCODER = json.JSONEncoder(default=_json_default)

SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("row_index", pa.int32(), nullable=False),
        pa.field("role", pa.string(), nullable=False),
        pa.field("served", pa.bool_(), nullable=False),  # false: a shadow score, never returned to the caller
        pa.field("logged_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("log_date", pa.string(), nullable=False),
        pa.field("endpoint", pa.string()),
        pa.field("customer_id", pa.string()),
        pa.field("model_name", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("probability", pa.float64()),
        pa.field("threshold", pa.float64()),
        pa.field("decision", pa.int32()),
        pa.field("latency_ms", pa.float64()),
        pa.field("features", pa.string()),  # the model inputs as JSON
        pa.field("flags", pa.list_(pa.string())),
    ]
)


@dataclass(frozen=True)
class FeatureRows:
    """A batch's model inputs as the log keeps them until a flush: the column names and one NumPy
    array of Python objects (each value as its column's dtype gives it, missing values None).

    Not a DataFrame: the garbage collector traverses every pending one (about 150 objects each),
    and a thousand one-row requests waiting for a flush made each full collection take 50-100 ms
    of every request thread's time; an array of values is no object it traverses."""

    columns: tuple[Any, ...]
    values: np.ndarray

    @classmethod
    def of(cls, frame: pd.DataFrame) -> FeatureRows:
        values = frame.to_numpy(dtype=object, copy=True)
        values[pd.isna(values)] = None
        return cls(tuple(frame.columns), values)

    def json(self) -> list[str]:
        """One JSON object per row."""
        return [_ENCODER.encode(dict(zip(self.columns, row))) for row in self.values.tolist()]


@dataclass(frozen=True)
class LogBatch:
    """The rows one model call scored for one request."""

    request_id: str
    logged_at: datetime
    endpoint: str
    role: str
    served: bool
    model_name: str
    model_version: str
    threshold: float | None
    row_indices: list[int]
    customer_ids: list[str | None]
    features: pd.DataFrame | FeatureRows  # InferenceLog.append keeps FeatureRows
    probabilities: np.ndarray
    latency_ms: float
    flags: list[list[str]] | None = None

    def __len__(self) -> int:
        return len(self.row_indices)


def _features_json(batches: list[LogBatch]) -> list[str]:
    """Every batch's feature rows as JSON, in batch order: values as each batch's own dtypes give
    them (3 from an int column, 3.0 from a float one), missing values (NaN, NaT, None) as null.

    Each frame goes to a NumPy array of Python objects in one call: selecting, concatenating and
    converting frames with pandas held the GIL the request threads share for 16 ms per 1,000
    rows, 133 ms for 1,000 one-row requests."""
    texts: list[str] = []
    for batch in batches:
        rows = batch.features if isinstance(batch.features, FeatureRows) else FeatureRows.of(batch.features)
        texts += rows.json()
    return texts


def to_arrow(batches: list[LogBatch]) -> pa.Table:
    """The batches as rows of the inference log."""
    columns: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
    for batch in batches:
        n = len(batch)
        probabilities = [float(p) for p in batch.probabilities]
        columns["request_id"] += [batch.request_id] * n
        columns["row_index"] += list(batch.row_indices)
        columns["role"] += [batch.role] * n
        columns["served"] += [batch.served] * n
        columns["logged_at"] += [batch.logged_at] * n
        columns["log_date"] += [batch.logged_at.date().isoformat()] * n
        columns["endpoint"] += [batch.endpoint] * n
        columns["customer_id"] += list(batch.customer_ids)
        columns["model_name"] += [batch.model_name] * n
        columns["model_version"] += [batch.model_version] * n
        columns["probability"] += probabilities
        columns["threshold"] += [batch.threshold] * n
        columns["decision"] += [None if batch.threshold is None else int(p >= batch.threshold) for p in probabilities]
        columns["latency_ms"] += [batch.latency_ms] * n
        columns["flags"] += list(batch.flags) if batch.flags is not None else [[] for _ in range(n)]
    columns["features"] = _features_json(batches)
    return pa.Table.from_pydict(columns, schema=SCHEMA)


def write_rows(target: str | Any, table: pa.Table, writer: str, version: int) -> Any:
    """Append ``table`` to the Delta table at ``target`` (a path or an open ``DeltaTable``) as
    transaction ``version`` of ``writer``, unless the table already records that version (the
    retry of a write whose commit landed). The open table, for the next write."""
    from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

    commit = CommitProperties(app_transactions=[Transaction(writer, version)])
    if isinstance(target, str):
        if not DeltaTable.is_deltatable(target):
            if not table.num_rows:
                return target
            write_deltalake(target, table, mode="append", partition_by=["log_date"], commit_properties=commit)
            return DeltaTable(target)
        target = DeltaTable(target)
    if (target.transaction_version(writer) or 0) < version and table.num_rows:
        write_deltalake(target, table, mode="append", partition_by=["log_date"], commit_properties=commit)
    return target


class InferenceLog:
    """The buffer and its flush thread."""

    def __init__(self, settings: InferenceLogSettings, metrics: Any = None) -> None:
        self.settings = settings
        self._metrics = metrics
        self._pending: list[LogBatch] = []
        self._pending_rows = 0  # every row not written yet: queued, being written, or to retry
        self._queued_rows = 0  # the rows of _pending only: what makes a flush due
        # This process's writer id and the version of its last flush; a failed flush's batches
        # are retried alone, as the version they were tried as.
        self.writer = f"lakehouse_ml.serving.inference_log/{uuid.uuid4().hex}"
        self._version = 0
        self._retry: tuple[int, list[LogBatch]] | None = None
        self._table: Any = None  # the open DeltaTable (None: open it from the path)
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def pending_rows(self) -> int:
        """Rows appended and not flushed yet (those of a failed flush included)."""
        return self._pending_rows

    def append(self, batch: LogBatch) -> None:
        """Queue a batch, its features as :class:`FeatureRows`; wake the flusher when a flush is due."""
        if isinstance(batch.features, pd.DataFrame):
            batch = dataclasses.replace(batch, features=FeatureRows.of(batch.features))
        with self._lock:
            self._pending.append(batch)
            self._pending_rows += len(batch)
            self._queued_rows += len(batch)
            # Rows being written do not count: they would wake a second flush of a few rows.
            due = self._queued_rows >= self.settings.flush_rows
        if due:
            self._wake.set()

    def flush(self) -> int:
        """Write every pending row; on failure keep them for the next flush. The rows written."""
        with self._flush_lock:
            written = 0
            if self._retry is not None:
                version, batches = self._retry
                if not self._write(batches, version):
                    self._limit()
                    return 0
                self._retry, written = None, sum(len(b) for b in batches)
            with self._lock:
                batches, self._pending, self._queued_rows = self._pending, [], 0
            if batches:
                self._version += 1
                if not self._write(batches, self._version):
                    self._retry = (self._version, batches)
                    self._limit()
                    return written
                written += sum(len(b) for b in batches)
            return written

    def _write(self, batches: list[LogBatch], version: int) -> bool:
        """Append the batches as ``version``; False (logged) when the write failed."""
        rows = sum(len(b) for b in batches)
        try:
            self._table = write_rows(self._table or self.settings.path, to_arrow(batches), self.writer, version)
        except Exception:
            logger.exception(
                "inference log: flush of %d rows to %s failed; kept for the next flush", rows, self.settings.path
            )
            self._table = None  # reopened, so that a commit that landed is seen
            return False
        with self._lock:
            self._pending_rows -= rows
        self._count("flushed", rows)
        logger.info("inference log: %d rows flushed to %s", rows, self.settings.path)
        return True

    def _limit(self) -> None:
        """While writes fail, drop the oldest rows beyond ``max_buffer_rows``: those of the failed
        flush first (a batch that always fails cannot hold the log up for good), the newest batch
        never. A retry left with fewer rows is still written as its version: a version that landed
        is skipped whole, one that did not has nothing in the table."""
        dropped = 0
        with self._lock:
            while self._pending_rows > self.settings.max_buffer_rows:
                if self._retry is not None and self._retry[1]:
                    oldest = self._retry[1].pop(0)
                elif len(self._pending) > 1:
                    oldest = self._pending.pop(0)
                    self._queued_rows -= len(oldest)
                else:
                    break
                self._pending_rows -= len(oldest)
                dropped += len(oldest)
            if self._retry is not None and not self._retry[1]:
                self._retry = None
        if dropped:
            logger.error(
                "inference log: %d oldest rows dropped (buffer above %d rows)", dropped, self.settings.max_buffer_rows
            )
            self._count("dropped", dropped)

    def _count(self, outcome: str, rows: int) -> None:
        if self._metrics is not None:
            self._metrics.log_rows.labels(outcome=outcome).inc(rows)
            self._metrics.log_pending.set(self._pending_rows)

    def start(self) -> None:
        """Flush on a daemon thread every ``flush_interval_s`` seconds, or sooner when ``flush_rows`` are waiting."""
        if self._thread is not None:
            return

        def loop() -> None:
            while True:
                self._wake.wait(self.settings.flush_interval_s)
                self._wake.clear()
                if self._stop.is_set():
                    return  # close() flushes the rest
                self.flush()

        self._thread = threading.Thread(target=loop, name="serving-inference-log", daemon=True)
        self._thread.start()

    def close(self) -> int:
        """Stop the thread and flush what is left; the rows written by this last flush."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        return self.flush()
