"""The inference log: every scored row, buffered in memory and MERGEd into ``<catalog>.monitoring.inference_log``.

Requests only append a :class:`LogBatch` (a reference to arrays they already have); turning rows
into Arrow and JSON happens on the flush thread, off the response path. A flush runs every
``flush_rows`` rows or ``flush_interval_s`` seconds and on shutdown, so a crash loses at most the
unflushed rows. It is a MERGE on (request_id, row_index, role) restricted to the rows' partitions
(``log_date``), so writing the same rows again (a retry after a lost commit acknowledgement)
inserts nothing. A failed write keeps the rows for the next flush, up to ``max_buffer_rows``.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from lakehouse_ml.serving.config import InferenceLogSettings

logger = logging.getLogger(__name__)

KEYS = ("request_id", "row_index", "role")
SCHEMA = pa.schema([
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
])


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
    features: pd.DataFrame
    probabilities: np.ndarray
    latency_ms: float
    flags: list[list[str]] | None = None

    def __len__(self) -> int:
        return len(self.row_indices)


_JSON_CHUNK = 256  # batches converted per pandas call: bounds how long one call holds the GIL


def _feature_json(frame: pd.DataFrame) -> list[str]:
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return [json.dumps(record, default=str) for record in records]


def _features_json(batches: list[LogBatch]) -> list[str]:
    """Every batch's feature rows as JSON, in batch order.

    Batches with the same columns and dtypes are converted together (a concat of different dtypes
    would change a value's text, 3 becoming 3.0): pandas costs about 2 ms per call whatever the
    size, and a flush of 1,000 one-row requests took 2-4 s of the GIL the request threads share,
    one frame at a time (60-80 ms together)."""
    texts: list[list[str]] = [[] for _ in batches]
    groups: dict[tuple[tuple[str, str], ...], list[int]] = {}
    for position, batch in enumerate(batches):
        frame = batch.features
        groups.setdefault(tuple(zip(map(str, frame.columns), map(str, frame.dtypes))), []).append(position)
    for members in groups.values():
        for start in range(0, len(members), _JSON_CHUNK):
            chunk = members[start : start + _JSON_CHUNK]
            frames = [batches[position].features for position in chunk]
            rows = _feature_json(frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True))
            offset = 0
            for position in chunk:
                size = len(batches[position].features)
                texts[position], offset = rows[offset : offset + size], offset + size
    return [text for batch_texts in texts for text in batch_texts]


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


def write_rows(path: str, table: pa.Table) -> None:
    """Insert the rows whose (request_id, row_index, role) the table does not hold yet."""
    from deltalake import DeltaTable, write_deltalake

    if table.num_rows == 0:
        return
    if not DeltaTable.is_deltatable(path):
        write_deltalake(path, table, mode="append", partition_by=["log_date"])
        return
    dates = ", ".join(f"'{d}'" for d in sorted(set(table.column("log_date").to_pylist())))
    keys = " AND ".join(f"t.{key} = s.{key}" for key in KEYS)
    (
        DeltaTable(path)
        .merge(source=table, predicate=f"t.log_date IN ({dates}) AND {keys}", source_alias="s", target_alias="t")
        .when_not_matched_insert_all()
        .execute()
    )


class InferenceLog:
    """The buffer and its flush thread."""

    def __init__(self, settings: InferenceLogSettings, metrics: Any = None) -> None:
        self.settings = settings
        self._metrics = metrics
        self._pending: list[LogBatch] = []
        self._pending_rows = 0
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def pending_rows(self) -> int:
        """Rows appended and not flushed yet."""
        return self._pending_rows

    def append(self, batch: LogBatch) -> None:
        """Queue a batch (cheap: no conversion here); wake the flusher when a flush is due."""
        with self._lock:
            self._pending.append(batch)
            self._pending_rows += len(batch)
            due = self._pending_rows >= self.settings.flush_rows
        if due:
            self._wake.set()

    def flush(self) -> int:
        """Write every pending row; on failure keep them for the next flush. The rows written."""
        with self._flush_lock:
            with self._lock:
                batches, self._pending, self._pending_rows = self._pending, [], 0
            if not batches:
                return 0
            rows = sum(len(b) for b in batches)
            try:
                write_rows(self.settings.path, to_arrow(batches))
            except Exception:  # noqa: BLE001 - the rows stay buffered; the service keeps serving
                logger.exception("inference log: flush of %d rows to %s failed; kept for the next flush", rows, self.settings.path)
                self._requeue(batches)
                return 0
            self._count("flushed", rows)
            logger.info("inference log: %d rows flushed to %s", rows, self.settings.path)
            return rows

    def _requeue(self, batches: list[LogBatch]) -> None:
        with self._lock:
            self._pending = batches + self._pending
            self._pending_rows += sum(len(b) for b in batches)
            dropped = 0
            while self._pending_rows > self.settings.max_buffer_rows and len(self._pending) > 1:
                oldest = self._pending.pop(0)
                self._pending_rows -= len(oldest)
                dropped += len(oldest)
        if dropped:
            logger.error("inference log: %d oldest rows dropped (buffer above %d rows)", dropped, self.settings.max_buffer_rows)
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
