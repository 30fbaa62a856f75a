#!/usr/bin/env python
"""Benchmark the Spark ``ingest`` pipeline against a single-process pandas + deltalake baseline.

    python tests/benchmarks/bench_ingest.py [--scales 1,10] [--many-files 1000,4000] [--workdir DIR]
                                            [--incremental-days 30]

For every case, in a fresh work directory (the cwd of every step):

1. the ``simulate`` pipeline writes the landing files (timed, not part of the comparison);
2. INGEST: the project's ``ingest`` pipeline (all sources, then gold) through ``run_pipeline`` on
   the real catalog and parameters, on the embedded Sail engine of ``conf/<env>/spark.yml``;
   the row counts come from the audit table ``monitoring/ingest_audit``;
3. BASELINE: the same landing → bronze → silver (+ quarantine) step in plain pandas + deltalake
   (one process; the Python work runs on one thread, only delta-rs' Parquet writer may use more),
   written to ``<run dir>/baseline/…``;
4. both results are checked against each other: silver rows and quarantined rows per source must
   be equal (AGREE / DISAGREE), and at small scales the silver contents are compared too;
5. with ``--incremental-days N``, INCREMENTAL: the ingest again from empty tables without the last
   N delivery days of every source, then those N days into the tables it wrote (silver's and
   gold's MERGEs, which a run from empty tables never exercises): that second run's time, events
   and peak RSS are reported, and its tables are checked against the baseline's like the first.

A case is a ``simulate.scale`` (``--scales``: 180 daily deliveries of big files) or a number of
small delivery files (``--many-files``: ``n / 4`` daily deliveries of each source at the small
``--many-files-scale``, e.g. 4,000 files = 1,000 days, about three years).

Each step runs in its own child process (``--phase``), so the peak RSS reported is the step's own
(``ru_maxrss`` of the process, children included) and neither implementation inherits the
other's memory, threads or imports. Engine start-up and imports are outside the timed section.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

SOURCES = ("orders", "customers", "sessions", "tickets")  # lakehouse_ml.pipelines.ingest.pipeline.SOURCES
OUTCOMES = ("inserted", "updated", "duplicate", "quarantined")
MARKER = ".bench_ingest"  # a run directory holding this file was made by us and may be wiped
BASELINE_DIR = "baseline"
DEEP_COMPARE_MAX_SCALE = 1.0  # above this, only counts are compared unless --deep-compare
MANY_FILES_SCALE = 0.1  # 2,000 customers: every source delivers (almost) every day, ~200 lines a file


@dataclass(frozen=True)
class Case:
    """One benchmark case: a ``simulate.scale`` and, for a many-files case, the number of days."""

    scale: float
    days: int | None = None  # None: the simulate parameters' n_days

    @property
    def name(self) -> str:
        return f"scale_{self.scale:g}" if self.days is None else f"files_{self.days * len(SOURCES)}"

    @property
    def label(self) -> str:
        if self.days is None:
            return f"scale {self.scale:g}"
        return f"{self.days * len(SOURCES):,} files ({self.days} days x {len(SOURCES)} sources, scale {self.scale:g})"

    @property
    def short(self) -> str:
        return f"{self.scale:g}" if self.days is None else f"{self.days * len(SOURCES)} files"


# ================================================================ shared helpers


def peak_rss_mb() -> float:
    """Peak resident set size of this process or any of its waited-for children, in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024  # Linux reports KiB


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads) and its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def machine_busy_seconds() -> float | None:
    """CPU seconds all processes of the machine have used so far (Linux /proc/stat), or None."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def table_paths(env: str) -> dict[str, Any]:
    """The landing folders and lakehouse tables of the project's catalog (relative to the cwd)."""
    from tests.helpers import project_config

    catalog = project_config(env)["catalog"]
    landing = {}
    for source in SOURCES:
        entry = catalog[f"{source}_landing@spark"]
        landing[source] = {
            "path": entry["path"],
            "suffix": entry.get("filename_suffix", ""),
            "format": entry["dataset"].get("file_format", "json"),
        }
    return {
        "landing": landing,
        "bronze": catalog["{source}.bronze"]["filepath"],
        "silver": catalog["{source}_silver@spark"]["filepath"],
        "quarantine": catalog["{source}.quarantine"]["filepath"],
        "audit": catalog["{source}.ingest_audit"]["filepath"],
    }


def baseline_tables() -> dict[str, str]:
    """Where the baseline writes (relative to the run directory)."""
    return {
        "bronze": f"{BASELINE_DIR}/bronze/{{source}}",
        "silver": f"{BASELINE_DIR}/silver/{{source}}",
        "quarantine": f"{BASELINE_DIR}/quarantine/{{source}}",
        "audit": f"{BASELINE_DIR}/monitoring/ingest_audit",
    }


def delta_count(path: str) -> int | None:
    """Row count of a Delta table (``None`` if absent), via delta-rs SQL (no pyarrow threads)."""
    import pyarrow as pa
    from deltalake import DeltaTable, QueryBuilder

    uri = str(Path(path).resolve())
    if not DeltaTable.is_deltatable(uri):
        return None
    reader = QueryBuilder().register("t", DeltaTable(uri)).execute("select count(*) as n from t")
    return int(pa.table(reader.read_all()).column("n")[0].as_py())


def read_delta(path: str, columns: list[str] | None = None):
    """A Delta table as pandas through delta-rs' own reader (see engine notes: exit 134)."""
    from lakehouse_ml.datasets import PandasDeltaDataset

    return PandasDeltaDataset(filepath=str(Path(path).resolve()), columns=columns).load()


def landing_files(spec: dict[str, str]) -> list[tuple[str, str]]:
    """``(partition id, absolute path)`` of one source's delivered files, sorted by partition id.

    The same listing as the catalog's PartitionedDataset: every file below the folder ending in
    the suffix; the partition id is its relative path without the suffix.
    """
    root = Path(spec["path"]).resolve()
    if not root.is_dir():
        return []
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            if name.endswith(spec["suffix"]):
                path = Path(folder) / name
                relative = path.relative_to(root).as_posix()
                found.append(
                    (relative[: len(relative) - len(spec["suffix"])] if spec["suffix"] else relative, str(path))
                )
    return sorted(found)


def write_result(path: Path, result: dict[str, Any]) -> None:
    path.write_text(json.dumps(result, indent=2, default=str))


# ================================================================ phase: simulate


def phase_simulate(scale: float, env: str, days: int | None = None) -> dict[str, Any]:
    """Generate the landing files of ``scale`` (and ``days`` deliveries) in the cwd with the
    project's simulate pipeline."""
    from lakehouse_ml.pipelines.simulate.pipeline import create_pipeline
    from tests.helpers import run_pipeline

    started = time.perf_counter()
    simulate: dict[str, Any] = {"scale": scale} | ({"n_days": days} if days else {})
    run_pipeline(create_pipeline(), env=env, runtime_params={"simulate": simulate})
    seconds = time.perf_counter() - started
    files, lines, size = {}, {}, {}
    for source, spec in table_paths(env)["landing"].items():
        found = landing_files(spec)
        files[source] = len(found)
        size[source] = sum(os.path.getsize(p) for _, p in found)
        count = 0
        for _, path in found:
            with open(path, "rb") as handle:
                count += sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 24), b""))
        lines[source] = count
    return {
        "seconds": seconds,
        "files": files,
        "lines": lines,
        "bytes": size,
        "peak_rss_mb": peak_rss_mb(),
    }


# ================================================================ phase: ingest (Spark)


class NodeTimer(logging.Handler):
    """Per-node wall time from Kedro's runner log: one node ends at its "Completed node" line.

    ``total`` is the time since the previous node completed (input loading, the function, and
    the output saves, where the lazy Spark plans actually execute); ``function`` is the part after
    "Running node" (the function and the saves).
    """

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self._last = time.time()
        self._running: float | None = None
        self.nodes: list[dict[str, Any]] = []

    def reset(self) -> None:
        """Start counting now (the run starts)."""
        self._last, self._running, self.nodes = time.time(), None, []

    def emit(self, record: logging.LogRecord) -> None:
        message = str(record.msg)
        if message.startswith("Running node"):
            self._running = record.created
        elif message.startswith("Completed node") and record.args:
            name = str(record.args[0])
            self.nodes.append(
                {
                    "node": name,
                    "total": record.created - self._last,
                    "function": record.created - (self._running or self._last),
                }
            )
            self._last = record.created
            self._running = None


def phase_ingest(env: str) -> dict[str, Any]:
    """Run the project's ingest pipeline in the cwd; time it; read the audit and table counts."""
    from lakehouse_ml.engine import ENGINE, EngineConfig
    from lakehouse_ml.pipelines.ingest.pipeline import create_pipeline
    from tests.helpers import project_config, run_pipeline

    paths = table_paths(env)
    started = time.perf_counter()
    ENGINE.start(EngineConfig.from_dict(project_config(env)["spark"]))
    startup = time.perf_counter() - started
    timer = NodeTimer()
    kedro_logger = logging.getLogger("kedro")
    kedro_logger.addHandler(timer)
    if kedro_logger.getEffectiveLevel() > logging.INFO:
        kedro_logger.setLevel(logging.INFO)
    cpu_before = cpu_seconds()
    try:
        started = time.perf_counter()
        timer.reset()
        run_pipeline(create_pipeline(), env=env)
        seconds = time.perf_counter() - started
        cpu = cpu_seconds() - cpu_before
    finally:
        kedro_logger.removeHandler(timer)
        ENGINE.stop()

    audit = read_delta(paths["audit"])
    per_source = {}
    for source in SOURCES:
        rows = audit[audit["source"] == source]
        per_source[source] = {
            "batches": len(rows),
            "bronze_rows": int(rows["bronze_rows"].sum()),
            **{o: int(rows[o].sum()) for o in OUTCOMES},
            "balanced": bool(rows["balanced"].all()),
            "silver_table_rows": delta_count(paths["silver"].format(source=source)),
            "quarantine_table_rows": delta_count(paths["quarantine"].format(source=source)),
            "bronze_table_rows": delta_count(paths["bronze"].format(source=source)),
        }
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "startup_seconds": startup,
        "sources": per_source,
        "nodes": timer.nodes,
        "peak_rss_mb": peak_rss_mb(),
    }


# ================================================================ phase: baseline (pandas + deltalake)
#
# The same step as the ingest pipeline, written the way one would in plain pandas: per source,
# files are read in chunks of about --chunk-rows lines; each chunk is parsed line by line (json /
# csv modules), then typed and checked column-wise (vectorised); bronze is streamed to Delta
# while the chunks are processed; silver is deduplicated per event_id over all valid rows.
#
# Semantics copied from the Spark implementation (nodes.py, schemas.py, datasets/landing.py):
# - bronze: every non-blank line (blank = only spaces), CSV header lines dropped, tagged with
#   format, header, file, source, delivery date, batch id and one ingestion timestamp;
# - a line is malformed if it is not a JSON object, or a CSV row whose field count differs from
#   the file's header; raw values are trimmed of spaces, "" counts as missing;
# - types: string as is, double/bigint must parse (bigint: an integer), timestamps ISO-8601
#   (UTC); a value present but not parsable fails "<field>: expected <type>";
# - delivered_at and configured defaults fill missing values (and are then never "missing");
# - checks: the pandera column checks and row rules of SCHEMAS (the single definition), with the
#   same messages; a row with any failure is quarantined with its raw line;
# - silver: valid rows ordered per event_id by (delivery date, file, content); the first row is
#   an insert, a row equal to its predecessor a duplicate, a different one an update; the last
#   one is the silver row.
# Deliberate differences: the baseline always starts from empty tables (the Spark run does too,
# in a fresh directory), so there is no ingest log / incremental merge; it does not build gold;
# content equality uses a 64-bit pandas hash computed only for event_ids seen more than once, and
# silver stores no _record_hash column (Spark stores a sha256 for every row); only the default
# timestamp parsing (ISO-8601, UTC) is implemented.

TYPE_NAMES = {"str": "string", "float64": "double", "int64": "bigint"}
INTEGER = re.compile(r"^[+-]?\d+$")
DELIVERY = re.compile(r"^(\d{4}-\d{2}-\d{2})/")


def _kind(column: Any) -> str:
    """Spark type name of a pandera column (what the messages call it)."""
    dtype = str(column.dtype)
    return "timestamp" if "datetime" in dtype.lower() else TYPE_NAMES[dtype]


def _expectation(check: Any) -> str:
    """The expectation text of a pandera check, as schemas._check_expression words it."""
    stats = check.statistics
    texts = {
        "greater_than_or_equal_to": lambda: f">= {stats['min_value']}",
        "greater_than": lambda: f"> {stats['min_value']}",
        "less_than_or_equal_to": lambda: f"<= {stats['max_value']}",
        "less_than": lambda: f"< {stats['max_value']}",
        "in_range": lambda: f"in [{stats['min_value']}, {stats['max_value']}]",
        "isin": lambda: f"one of {sorted(stats['allowed_values'])}",
        "str_matches": lambda: f"matching {stats['pattern']}",
        "str_length": lambda: f"length >= {stats.get('min_value') or stats.get('exact_value') or 0}",
    }
    if check.name not in texts:
        raise NotImplementedError(f"baseline: pandera check {check.name!r} is not supported")
    return texts[check.name]()


def _json_text(value: Any) -> str | None:
    """A parsed JSON value as Spark's ``from_json(..., map<string,string>)`` hands it over."""
    if value is None or type(value) is str:
        return value
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value, separators=(",", ":"))


def _text(value: Any, kind: str) -> str:
    """A typed value as Spark casts it to string in messages (``got …``)."""
    import pandas as pd

    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "null"
    if kind == "timestamp":
        stamp = pd.Timestamp(value).tz_convert("UTC")
        text = stamp.strftime("%Y-%m-%d %H:%M:%S")
        return text + (f".{stamp.microsecond:06d}".rstrip("0") if stamp.microsecond else "")
    if kind == "double":
        return repr(float(value))
    if kind == "bigint":
        return str(int(value))
    return str(value)


class BaselineSource:
    """Bronze → silver for one source in pandas: parse, type, check, quarantine, deduplicate."""

    def __init__(
        self, name: str, params: dict[str, Any], spec: dict[str, str], ingested_at: Any, chunk_rows: int
    ) -> None:
        from lakehouse_ml.pipelines.ingest.schemas import SCHEMAS, canonical_columns

        self.name = name
        self.params = params
        self.format = spec["format"]
        self.files = landing_files(spec)
        self.ingested_at = ingested_at
        self.chunk_rows = chunk_rows
        self.schema = SCHEMAS[params.get("schema", name)]
        self.fields = canonical_columns(self.schema)
        self.kinds = {f: _kind(self.schema.columns[f]) for f in self.fields}
        mapping = params.get("column_mapping") or {}
        renamed = {canonical: original for original, canonical in mapping.items()}
        self.keys = {f: renamed.get(f, f) for f in self.fields}  # canonical → key in the file
        self.known = set(self.fields) | set(mapping)
        if params.get("timestamp_format") or (params.get("timezone") or "UTC") != "UTC":
            raise NotImplementedError(
                f"baseline: source {name!r} sets timestamp_format/timezone; only ISO-8601 UTC "
                "timestamps are implemented"
            )
        # Per file (index = position in self.files): metadata and tallies.
        self.batch_ids = [f"{name}/{pid}" for pid, _ in self.files]
        self.delivery = [self._delivery_date(pid) for pid, _ in self.files]
        import numpy as np

        self.delivery_ts = np.array(self.delivery, dtype="datetime64[ns]")  # midnight UTC
        self.delivery_text = np.array([f"{d} 00:00:00" for d in self.delivery], dtype=object)
        self.bronze_rows = [0] * len(self.files)
        self.unexpected: list[set[str]] = [set() for _ in self.files]
        self.valid: list[Any] = []  # typed frames of valid rows (+ "_file" index)
        self.quarantine: list[Any] = []
        self.seconds = {"read_parse": 0.0, "type_check": 0.0}

    @staticmethod
    def _delivery_date(partition_id: str) -> str:
        match = DELIVERY.match(partition_id)
        if not match:
            raise ValueError(f"landing file '{partition_id}': not inside a YYYY-MM-DD folder")
        return match.group(1)

    # ---------------------------------------------------------------- reading and parsing

    @staticmethod
    def _read_lines(path: str, file_format: str) -> tuple[list[str], str | None]:
        """Non-blank lines of a file (CSV: without header lines) and the CSV header."""
        with open(path, encoding="utf-8") as handle:  # universal newlines: \r\n, \r → \n
            text = handle.read()
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        header = None
        if file_format == "csv":
            header = lines[0] if lines else ""
            if not header:
                raise ValueError(f"Landing file '{path}': CSV file has no header line")
            return [line for line in lines if line != header and line.strip(" ")], header
        return [line for line in lines if line.strip(" ")], None

    def _parse_json(self, lines: list[str], file_no: int) -> tuple[dict[str, list], list[bool]]:
        """Raw values per canonical field and the malformed flags of JSON lines."""
        loads = json.loads
        empty: dict = {}
        records = []
        append = records.append
        malformed = []
        flag = malformed.append
        for line in lines:
            try:
                record = loads(line)
            except ValueError:
                record = None
            if type(record) is dict:
                append(record)
                flag(False)
            else:
                append(empty)
                flag(True)
        keys: set[str] = set().union(*records) if records else set()
        self.unexpected[file_no] |= keys - self.known
        columns = {f: [r.get(key) for r in records] for f, key in self.keys.items()}
        return columns, malformed

    def _parse_csv(self, lines: list[str], header: str, file_no: int) -> tuple[dict[str, list], list[bool]]:
        """Raw values per canonical field and the malformed flags of CSV lines (file's header)."""
        import csv

        names = next(csv.reader([header]))
        index = {name: i for i, name in enumerate(names)}  # a repeated name: the last one wins
        self.unexpected[file_no] |= set(names) - self.known
        rows = list(csv.reader(lines))
        if len(rows) != len(lines):  # a quoted field ran across lines: parse each line alone
            rows = [next(csv.reader([line]), []) for line in lines]
        width = len(names)
        malformed = [len(row) != width for row in rows]
        if any(malformed):
            blank = [None] * width
            rows = [blank if bad else row for row, bad in zip(rows, malformed)]
        columns = {}
        for field, key in self.keys.items():
            position = index.get(key)
            columns[field] = [None] * len(rows) if position is None else [row[position] for row in rows]
        return columns, malformed

    # ---------------------------------------------------------------- chunks and bronze

    def _chunks(self) -> Iterator[list[int]]:
        """Groups of consecutive file numbers holding about chunk_rows bytes/150 lines each."""
        group, size = [], 0
        for number, (_, path) in enumerate(self.files):
            group.append(number)
            size += os.path.getsize(path)
            if size >= self.chunk_rows * 150:  # ~150 bytes a line
                yield group
                group, size = [], 0
        if group:
            yield group

    def bronze_batches(self) -> Iterator[Any]:
        """Read, parse and check the files chunk by chunk; yield each chunk's bronze rows."""
        import pyarrow as pa

        for group in self._chunks():
            lines: list[str] = []
            columns: dict[str, list] = {f: [] for f in self.fields}
            malformed: list[bool] = []
            counts = []
            headers = []
            started = time.perf_counter()
            collecting = gc.isenabled()
            gc.disable()  # millions of short-lived dicts: no cyclic GC passes while parsing
            try:
                self._read_group(group, lines, columns, malformed, counts, headers)
            finally:
                if collecting:
                    gc.enable()
            parsed = time.perf_counter()
            file_of_row = _repeat(group, counts)
            self._check_chunk(lines, columns, malformed, file_of_row)
            self.seconds["read_parse"] += parsed - started
            self.seconds["type_check"] += time.perf_counter() - parsed
            yield pa.RecordBatch.from_arrays(
                [
                    pa.array(lines, pa.string()),
                    pa.repeat(pa.scalar(self.format), len(lines)),
                    _per_row(headers, counts, pa.string()),
                    _per_row([self.files[n][1] for n in group], counts, pa.string()),
                    pa.repeat(pa.scalar(self.name), len(lines)),
                    _per_row([_date(self.delivery[n]) for n in group], counts, pa.date32()),
                    _per_row([self.batch_ids[n] for n in group], counts, pa.string()),
                    pa.repeat(pa.scalar(self.ingested_at.to_pydatetime(), pa.timestamp("us", "UTC")), len(lines)),
                ],
                schema=BRONZE_ARROW_SCHEMA(),
            )

    def _read_group(
        self,
        group: list[int],
        lines: list[str],
        columns: dict[str, list],
        malformed: list[bool],
        counts: list[int],
        headers: list[str | None],
    ) -> None:
        """Read and parse a group of files, appending to the chunk's lists."""
        for number in group:
            path = self.files[number][1]
            file_lines, header = self._read_lines(path, self.format)
            if self.format == "csv":
                file_columns, file_bad = self._parse_csv(file_lines, header, number)
            else:
                file_columns, file_bad = self._parse_json(file_lines, number)
            lines.extend(file_lines)
            malformed.extend(file_bad)
            for field in self.fields:
                columns[field].extend(file_columns[field])
            counts.append(len(file_lines))
            headers.append(header)
            self.bronze_rows[number] = len(file_lines)

    # ---------------------------------------------------------------- typing and checks

    def _check_chunk(
        self, lines: list[str], columns: dict[str, list], malformed_list: list[bool], file_of_row: Any
    ) -> None:
        """Type a chunk's raw values, evaluate every check, split valid rows and quarantine."""
        import numpy as np
        import pandas as pd

        n = len(lines)
        if n == 0:
            return
        malformed = np.asarray(malformed_list, dtype=bool)
        ok = ~malformed
        raw: dict[str, pd.Series] = {}
        present: dict[str, np.ndarray] = {}
        typed: dict[str, pd.Series] = {}
        delivered_at = pd.Series(self.delivery_ts[file_of_row]).dt.tz_localize("UTC")
        defaults = {
            # Spark: _delivery_date cast to timestamp; its raw text is that timestamp as a string.
            "delivered_at": (delivered_at, self.delivery_text[file_of_row]),
            **{f: _default(v, self.kinds[f]) for f, v in (self.params.get("defaults") or {}).items()},
        }
        for field in self.fields:
            kind = self.kinds[field]
            values = pd.Series(columns[field], dtype=object)
            inferred = pd.api.types.infer_dtype(values, skipna=True)
            if kind in ("double", "bigint") and inferred in ("integer", "floating", "mixed-integer-float"):
                # JSON numbers arrive typed; bigint only takes whole numbers. They are rendered
                # to text only for messages.
                value = values.astype("float64")
                if kind == "bigint":
                    value = value.where(value == np.floor(value))
                text = values
            else:
                if inferred not in ("string", "empty"):
                    values = values.map(_json_text)  # e.g. a number where a string is expected
                if kind == "string":  # Arrow-backed strings: compact, and trimmed by Arrow kernels
                    text = values.astype("string[pyarrow]").str.strip(" ")
                    text = text.mask(text == "")
                else:
                    text = values.str.strip(" ") if inferred != "empty" else values
                    text = text.where(text != "")
                if kind == "string":
                    value = text
                elif kind == "double":
                    value = pd.to_numeric(text, errors="coerce").astype("float64")
                elif kind == "bigint":
                    whole = (text.str.match(INTEGER) == True).to_numpy()  # noqa: E712 (NaN → False)
                    value = pd.to_numeric(text.where(whole), errors="coerce").astype("float64")
                else:
                    value = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
            has_value = text.notna().to_numpy()
            if field in defaults and not has_value.all():
                default_value, default_text = defaults[field]
                value = value.where(has_value, default_value)
                text = pd.Series(text, dtype=object).where(has_value, default_text)
                has_value = np.ones(n, dtype=bool)  # a defaulted field is never missing
            if kind == "bigint":
                value = value.astype("Int64")
            raw[field], present[field], typed[field] = text, has_value, value
        frame = pd.DataFrame(typed)

        failures: list[tuple[np.ndarray, Callable[[np.ndarray], list[str]]]] = []
        for field, column in self.schema.columns.items():
            kind = self.kinds[field]
            is_null = frame[field].isna().to_numpy()
            has_value = present[field]
            failures.append(
                (
                    has_value & is_null & ok,
                    lambda idx, f=field, k=kind: [
                        f"{f}: expected {k}, got {_json_text(v) if v is not None else 'null'}" for v in raw[f].iloc[idx]
                    ],
                )
            )
            if not column.nullable:
                failures.append((~has_value & ok, lambda idx, f=field: [f"{f}: expected a value, got null"] * len(idx)))
            for check in column.checks:
                values = frame[field][~is_null]
                passes = np.ones(n, dtype=bool)
                if len(values):
                    result = check(values).check_output.reindex(values.index, fill_value=True)
                    passes[~is_null] = result.fillna(False).to_numpy(dtype=bool)
                expectation = _expectation(check)
                failures.append(
                    (
                        ~is_null & ~passes & ok,
                        lambda idx, f=field, e=expectation, k=kind: [
                            f"{f}: expected {e}, got {_text(v, k)}" for v in frame[f].iloc[idx]
                        ],
                    )
                )
        from lakehouse_ml.pipelines.ingest.schemas import ROW_RULES

        for rule_name in self.schema.metadata["row_rules"]:
            rule = ROW_RULES[rule_name]
            inputs = np.logical_and.reduce([frame[f].notna().to_numpy() for f in rule.evidence])
            passes = rule.pandas_rule(frame).fillna(False).to_numpy(dtype=bool)
            failures.append(
                (
                    inputs & ~passes & ok,
                    lambda idx, r=rule: [
                        f"{r.name}: expected {r.expectation}, got "
                        + ", ".join(f"{f}={_text(frame[f].iloc[i], self.kinds[f])}" for f in r.evidence)
                        for i in idx
                    ],
                )
            )

        failed = malformed.copy()
        for mask, _ in failures:
            failed |= mask
        bad = np.flatnonzero(failed)
        if len(bad):
            position = np.full(n, -1, dtype=np.int64)
            position[bad] = np.arange(len(bad))
            messages: list[list[str]] = [[] for _ in bad]
            malformed_text = f"_raw: expected a valid {self.format.upper()} record"
            for i in np.flatnonzero(malformed):
                messages[position[i]].append(malformed_text)
            for mask, render in failures:
                idx = np.flatnonzero(mask)
                if len(idx):
                    for slot, message in zip(position[idx], render(idx)):
                        messages[slot].append(message)
            files = file_of_row[bad]
            self.quarantine.append(
                pd.DataFrame(
                    {
                        "_batch_id": [self.batch_ids[i] for i in files],
                        "_source": self.name,
                        "_source_file": [self.files[i][1] for i in files],
                        "_delivery_date": [_date(self.delivery[i]) for i in files],
                        "_ingested_at": self.ingested_at,
                        "_raw": [lines[i] for i in bad],
                        "_failed_checks": messages,
                    }
                )
            )
        good = ~failed
        valid = frame[good].reset_index(drop=True)
        valid["_file"] = file_of_row[good]
        self.valid.append(valid)

    # ---------------------------------------------------------------- silver

    def classify(self) -> tuple[Any, dict[str, Any]]:
        """Silver rows (last delivered version per event_id) and per-file outcome tallies."""
        import numpy as np
        import pandas as pd

        tallies = {o: np.zeros(len(self.files), dtype=np.int64) for o in OUTCOMES}
        for frame in self.quarantine:
            for batch, count in frame["_batch_id"].value_counts().items():
                tallies["quarantined"][self.batch_ids.index(batch)] += count
        if not self.valid:
            return pd.DataFrame(columns=[*self.fields, "_file"]), tallies
        rows = pd.concat(self.valid, ignore_index=True)
        self.valid = []
        n = len(rows)
        codes, _ = pd.factorize(rows["event_id"])
        repeated = np.bincount(codes)[codes] > 1
        outcome = np.zeros(n, dtype=np.int8)  # 0 inserted, 1 updated, 2 duplicate
        winner = ~repeated
        several = np.flatnonzero(repeated)
        if len(several):
            content = [f for f in self.fields if f != "delivered_at"]
            subset = rows.iloc[several]
            digest = pd.util.hash_pandas_object(subset[content], index=False).to_numpy()
            # Delivery order: date, then file path, then content (as the Spark window orders).
            file_rank = np.argsort(
                np.argsort(
                    np.array(
                        [f"{self.delivery[i]}\x00{self.files[i][1]}" for i in range(len(self.files))], dtype=object
                    )
                )
            )
            order = np.lexsort((digest, file_rank[subset["_file"].to_numpy()], codes[several]))
            sorted_codes, sorted_digest = codes[several][order], digest[order]
            first = np.r_[True, sorted_codes[1:] != sorted_codes[:-1]]
            last = np.r_[sorted_codes[1:] != sorted_codes[:-1], True]
            same = np.r_[False, sorted_digest[1:] == sorted_digest[:-1]]
            outcome[several[order]] = np.where(first, 0, np.where(same, 2, 1))
            winner[several[order[last]]] = True
        files = rows["_file"].to_numpy()
        for code, name in enumerate(("inserted", "updated", "duplicate")):
            tallies[name] += np.bincount(files[outcome == code], minlength=len(self.files))
        return rows[winner].reset_index(drop=True), tallies

    def silver_arrow(self, silver: Any) -> Any:
        """Silver rows as Arrow with the Spark silver types and their delivery metadata."""
        import pyarrow as pa

        types = {
            "string": pa.string(),
            "double": pa.float64(),
            "bigint": pa.int64(),
            "timestamp": pa.timestamp("us", "UTC"),
        }
        files = pa.array(silver.pop("_file").to_numpy())
        for field in self.fields:
            if self.kinds[field] == "timestamp":
                silver[field] = silver[field].astype("datetime64[us, UTC]")
        schema = pa.schema([(f, types[self.kinds[f]]) for f in self.fields])
        table = pa.Table.from_pandas(silver[self.fields], schema=schema, preserve_index=False)
        per_file = {
            "_batch_id": pa.array(self.batch_ids, pa.string()),
            "_source_file": pa.array([path for _, path in self.files], pa.string()),
            "_delivery_date": pa.array([_date(d) for d in self.delivery], pa.date32()),
        }
        for name, values in per_file.items():
            table = table.append_column(name, values.take(files))
        stamp = pa.scalar(self.ingested_at.to_pydatetime(), pa.timestamp("us", "UTC"))
        return table.append_column("_ingested_at", pa.repeat(stamp, len(table)))

    def audit(self, tallies: dict[str, Any]) -> list[dict[str, Any]]:
        """One reconciliation row per delivered file."""
        top: dict[str, str] = {}
        for frame in self.quarantine:
            checks = frame[["_batch_id", "_failed_checks"]].explode("_failed_checks")
            checks["check"] = checks["_failed_checks"].str.split(":").str[0]
            counted = checks.groupby(["_batch_id", "check"]).size()
            for batch, group in counted.groupby(level=0):
                items = sorted(((int(c), k[1]) for k, c in group.items()), reverse=True)[:3]
                top[batch] = ", ".join(f"{check} ({count})" for count, check in items)
        rows = []
        for i, batch in enumerate(self.batch_ids):
            counts = {o: int(tallies[o][i]) for o in OUTCOMES}
            bronze = self.bronze_rows[i]
            rows.append(
                {
                    "batch_id": batch,
                    "source": self.name,
                    "delivery_date": _date(self.delivery[i]),
                    "source_file": self.files[i][1],
                    "bronze_rows": bronze,
                    **counts,
                    "balanced": bronze == sum(counts.values()),
                    "quarantine_rate": counts["quarantined"] / bronze if bronze else float("nan"),
                    "top_failed_checks": top.get(batch, ""),
                    "unexpected_columns": ", ".join(sorted(self.unexpected[i])),
                }
            )
        return rows


def BRONZE_ARROW_SCHEMA():
    import pyarrow as pa

    return pa.schema(
        [
            ("_raw", pa.string()),
            ("_format", pa.string()),
            ("_header", pa.string()),
            ("_source_file", pa.string()),
            ("_source", pa.string()),
            ("_delivery_date", pa.date32()),
            ("_batch_id", pa.string()),
            ("_ingested_at", pa.timestamp("us", "UTC")),
        ]
    )


def _repeat(values: list[int], counts: list[int]) -> Any:
    import numpy as np

    return np.repeat(np.asarray(values, dtype=np.int64), np.asarray(counts, dtype=np.int64))


def _per_row(values: list[Any], counts: list[int], type_: Any) -> Any:
    """A column holding values[i] counts[i] times (per-file constants, run-length expanded)."""
    import numpy as np
    import pyarrow as pa

    return pa.array(values, type_).take(pa.array(_repeat(list(range(len(values))), counts).astype(np.int64)))


def _date(text: str) -> Any:
    import datetime as dt

    return dt.date.fromisoformat(text)


def _default(value: Any, kind: str) -> tuple[Any, str]:
    """A configured default (``ingest.sources.<s>.defaults``) as a typed value and as raw text."""
    import pandas as pd

    text = _json_text(value)
    if kind == "timestamp":
        stamp = pd.Timestamp(value)
        return (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")), text
    if kind in ("double", "bigint"):
        return float(value), text
    return text, text


def phase_baseline(env: str, chunk_rows: int) -> dict[str, Any]:
    """The pandas + deltalake implementation on the landing files in the cwd; timed."""
    import pandas as pd
    import pyarrow as pa
    from deltalake import write_deltalake
    from omegaconf import OmegaConf

    from tests.helpers import project_config

    params = OmegaConf.to_container(OmegaConf.merge(project_config(env)["parameters"], {}))
    ingest = params["ingest"]
    landing = table_paths(env)["landing"]
    tables = baseline_tables()
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    ingested_at = pd.Timestamp.now(tz="UTC").floor("us")
    audit_rows: list[dict[str, Any]] = []
    per_source: dict[str, dict[str, Any]] = {}
    timings: dict[str, float] = {}
    steps = dict.fromkeys(
        ["read+parse", "type+check", "bronze write", "dedupe", "silver write", "quarantine+audit"], 0.0
    )
    gate = ingest["quarantine_gate"]
    for name in SOURCES:
        source_started = time.perf_counter()
        source = BaselineSource(name, ingest["sources"][name], landing[name], ingested_at, chunk_rows)
        write_deltalake(
            str(Path(tables["bronze"].format(source=name)).resolve()),
            pa.RecordBatchReader.from_batches(BRONZE_ARROW_SCHEMA(), source.bronze_batches()),
            mode="overwrite",
        )
        mark = time.perf_counter()
        steps["read+parse"] += source.seconds["read_parse"]
        steps["type+check"] += source.seconds["type_check"]
        steps["bronze write"] += mark - source_started - sum(source.seconds.values())
        silver, tallies = source.classify()
        audit = source.audit(tallies)
        over = [
            row
            for row in audit
            if row["bronze_rows"] >= gate.get("min_rows", 0) and row["quarantine_rate"] > gate["max_rate"]
        ]
        if over:
            raise RuntimeError(f"baseline: quarantine rate above {gate['max_rate']} in {[r['batch_id'] for r in over]}")
        steps["dedupe"] += time.perf_counter() - mark
        mark = time.perf_counter()
        silver_arrow = source.silver_arrow(silver)
        write_deltalake(str(Path(tables["silver"].format(source=name)).resolve()), silver_arrow, mode="overwrite")
        steps["silver write"] += time.perf_counter() - mark
        mark = time.perf_counter()
        quarantine = (
            pd.concat(source.quarantine, ignore_index=True)
            if source.quarantine
            else pd.DataFrame(
                {
                    c: []
                    for c in [
                        "_batch_id",
                        "_source",
                        "_source_file",
                        "_delivery_date",
                        "_ingested_at",
                        "_raw",
                        "_failed_checks",
                    ]
                }
            )
        )
        write_deltalake(
            str(Path(tables["quarantine"].format(source=name)).resolve()),
            pa.Table.from_pandas(quarantine, schema=QUARANTINE_ARROW_SCHEMA(), preserve_index=False),
            mode="overwrite",
        )
        audit_rows.extend(audit)
        per_source[name] = {
            "batches": len(audit),
            "bronze_rows": sum(r["bronze_rows"] for r in audit),
            **{o: sum(r[o] for r in audit) for o in OUTCOMES},
            "balanced": all(r["balanced"] for r in audit),
            "silver_rows_written": len(silver),
            "quarantine_rows_written": len(quarantine),
        }
        steps["quarantine+audit"] += time.perf_counter() - mark
        timings[name] = time.perf_counter() - source_started
        del silver, silver_arrow, quarantine, source
    mark = time.perf_counter()
    audit_frame = pd.DataFrame(audit_rows)
    write_deltalake(
        str(Path(tables["audit"]).resolve()), pa.Table.from_pandas(audit_frame, preserve_index=False), mode="overwrite"
    )
    steps["quarantine+audit"] += time.perf_counter() - mark
    seconds = time.perf_counter() - started
    cpu = cpu_seconds() - cpu_before
    for name in SOURCES:
        per_source[name]["silver_table_rows"] = delta_count(tables["silver"].format(source=name))
        per_source[name]["quarantine_table_rows"] = delta_count(tables["quarantine"].format(source=name))
        per_source[name]["bronze_table_rows"] = delta_count(tables["bronze"].format(source=name))
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "sources": per_source,
        "source_seconds": timings,
        "steps": steps,
        "peak_rss_mb": peak_rss_mb(),
    }


def QUARANTINE_ARROW_SCHEMA():
    import pyarrow as pa

    return pa.schema(
        [
            ("_batch_id", pa.string()),
            ("_source", pa.string()),
            ("_source_file", pa.string()),
            ("_delivery_date", pa.date32()),
            ("_ingested_at", pa.timestamp("us", "UTC")),
            ("_raw", pa.string()),
            ("_failed_checks", pa.list_(pa.string())),
        ]
    )


# ================================================================ phase: deep compare


def phase_compare(env: str) -> dict[str, Any]:
    """Compare silver contents and quarantined rows of both implementations, source by source."""
    import numpy as np
    import pandas as pd

    from lakehouse_ml.pipelines.ingest.schemas import SCHEMAS, canonical_columns

    paths, base = table_paths(env), baseline_tables()
    report: dict[str, Any] = {}
    for source in SOURCES:
        fields = canonical_columns(SCHEMAS[source])
        entry: dict[str, Any] = {}
        spark = read_delta(paths["silver"].format(source=source), [*fields, "_batch_id"]).set_index("event_id")
        pandas = read_delta(base["silver"].format(source=source), [*fields, "_batch_id"]).set_index("event_id")
        only_spark = spark.index.difference(pandas.index)
        only_pandas = pandas.index.difference(spark.index)
        entry["silver_only_in_ingest"] = len(only_spark)
        entry["silver_only_in_baseline"] = len(only_pandas)
        entry["examples_only_in_ingest"] = only_spark[:5].tolist()
        entry["examples_only_in_baseline"] = only_pandas[:5].tolist()
        common = spark.index.intersection(pandas.index)
        a, b = spark.loc[common], pandas.loc[common]
        differing = {}
        for column in [*fields[1:], "_batch_id"]:
            left, right = a[column], b[column]
            if pd.api.types.is_float_dtype(left):
                same = np.isclose(left.to_numpy(float), right.to_numpy(float), equal_nan=True)
            else:
                same = ((left == right) | (left.isna() & right.isna())).to_numpy()
            if (~same).any():
                bad = common[~same]
                differing[column] = {
                    "rows": int((~same).sum()),
                    "examples": [(k, str(a.at[k, column]), str(b.at[k, column])) for k in bad[:3]],
                }
        entry["silver_value_differences"] = differing
        q_spark = read_delta(paths["quarantine"].format(source=source), ["_batch_id", "_raw", "_failed_checks"])
        q_pandas = read_delta(base["quarantine"].format(source=source), ["_batch_id", "_raw", "_failed_checks"])
        for frame in (q_spark, q_pandas):
            frame["_checks"] = frame["_failed_checks"].map(lambda c: " | ".join(c))
        key = ["_batch_id", "_raw"]
        merged = q_spark.merge(q_pandas, on=key, how="outer", suffixes=("_ingest", "_baseline"), indicator=True)
        entry["quarantine_only_in_ingest"] = int((merged["_merge"] == "left_only").sum())
        entry["quarantine_only_in_baseline"] = int((merged["_merge"] == "right_only").sum())
        entry["quarantine_examples_only_in_ingest"] = (
            merged.loc[merged["_merge"] == "left_only", ["_raw", "_checks_ingest"]].head(3).values.tolist()
        )
        entry["quarantine_examples_only_in_baseline"] = (
            merged.loc[merged["_merge"] == "right_only", ["_raw", "_checks_baseline"]].head(3).values.tolist()
        )
        both = merged[merged["_merge"] == "both"]
        message_diff = both[both["_checks_ingest"] != both["_checks_baseline"]]
        entry["quarantine_message_differences"] = len(message_diff)
        entry["quarantine_message_examples"] = (
            message_diff[["_checks_ingest", "_checks_baseline"]].head(3).values.tolist()
        )
        report[source] = entry
    return report


# ================================================================ orchestration


def run_phase(
    phase: str, run_dir: Path, args: argparse.Namespace, extra: list[str] | None = None, tag: str | None = None
) -> dict[str, Any] | None:
    """Run one phase in a child process with cwd = run_dir; return its result (None on failure).

    ``tag`` names its result and log files (default: the phase), for a phase run more than once.
    """
    result_file = run_dir / f"{tag or phase}.result.json"
    log_file = run_dir / f"{tag or phase}.log"
    result_file.unlink(missing_ok=True)
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--phase",
        phase,
        "--env",
        args.env,
        "--result",
        str(result_file),
        "--chunk-rows",
        str(args.chunk_rows),
        *(extra or []),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    load_before = os.getloadavg()[0]
    busy_before, children_before = machine_busy_seconds(), cpu_seconds()
    started = time.perf_counter()
    with open(log_file, "w") as log:
        try:
            completed = subprocess.run(
                command, cwd=run_dir, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=args.timeout, check=False
            )
            code = completed.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    elapsed = time.perf_counter() - started
    busy_after, step_cpu = machine_busy_seconds(), cpu_seconds() - children_before
    if code != 0 or not result_file.exists():
        tail = log_file.read_text(errors="replace").splitlines()[-25:]
        print(f"  !! phase {phase} failed (exit {code}) after {elapsed:.0f} s; log: {log_file}")
        print("\n".join(f"     {line}" for line in tail))
        return None
    result = json.loads(result_file.read_text())
    result["process_seconds"] = elapsed
    result["exit_code"] = code
    # Other work on the machine skews wall times: the 1-minute load average around the phase
    # (this phase itself adds about 1 for a single-threaded step, up to the CPU count for Spark).
    result["load_avg"] = (load_before, os.getloadavg()[0])
    # The CPU the rest of the machine used meanwhile, in cores on average (contention).
    result["step_cores"] = step_cpu / elapsed
    result["other_cores"] = (
        None if busy_before is None or busy_after is None else max(0.0, (busy_after - busy_before - step_cpu) / elapsed)
    )
    return result


def run_incremental(run_dir: Path, args: argparse.Namespace) -> dict[str, Any] | None:
    """Ingest from empty tables without the last ``--incremental-days`` delivery days, then those days.

    Returns the second run's result with ``events`` (bronze rows of the held-back days) and the
    first run's ``first_seconds`` / ``first_peak_rss_mb``; None if either run failed.
    """
    from tests.helpers import project_config

    lakehouse = run_dir / project_config(args.env)["globals"]["lakehouse_root"]
    shutil.rmtree(lakehouse, ignore_errors=True)
    held = run_dir / "held_back"
    moved: list[tuple[Path, Path]] = []
    for source, landing in table_paths(args.env)["landing"].items():
        days = sorted(p for p in (run_dir / landing["path"]).iterdir() if p.is_dir())
        for day in days[-args.incremental_days :]:
            target = held / source / day.name
            target.parent.mkdir(parents=True, exist_ok=True)
            day.rename(target)
            moved.append((target, day))
    try:
        first = run_phase("ingest", run_dir, args, tag="ingest_before_increment")
    finally:
        for target, day in moved:
            target.rename(day)
    if first is None:
        return None
    second = run_phase("ingest", run_dir, args, tag="ingest_increment")
    if second is None:
        return None
    before = sum(v["bronze_rows"] for v in first["sources"].values())
    second["events"] = sum(v["bronze_rows"] for v in second["sources"].values()) - before
    second["first_seconds"] = first["seconds"]
    second["first_peak_rss_mb"] = first["peak_rss_mb"]
    return second


def prepare_run_dir(workdir: Path, case: Case) -> Path:
    """A fresh run directory for one case (an earlier benchmark run directory is wiped)."""
    run_dir = workdir / case.name
    if run_dir.exists():
        if not (run_dir / MARKER).exists():
            raise SystemExit(f"{run_dir} exists and was not made by this benchmark; choose another --workdir")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    (run_dir / MARKER).write_text("made by tests/benchmarks/bench_ingest.py; safe to delete\n")
    return run_dir


def contention(result: dict[str, Any]) -> str:
    """How busy the step and the rest of the machine were while the step ran."""
    others = result.get("other_cores")
    return (
        f"the step used {result['step_cores']:.2f} of {os.cpu_count()} cores on average, other processes "
        + ("?" if others is None else f"{others:.2f}")
        + f" (load avg {result['load_avg'][0]:.1f} -> {result['load_avg'][1]:.1f})"
    )


def fmt_int(value: Any) -> str:
    return "-" if value is None else f"{int(value):,}"


def fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def print_table(headers: list[str], rows: list[list[str]], indent: str = "  ") -> None:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = indent + "  ".join(str(h).rjust(w) for h, w in zip(headers, widths))
    print(line)
    print(indent + "  ".join("-" * w for w in widths))
    for row in rows:
        print(indent + "  ".join(str(c).rjust(w) for c, w in zip(row, widths)))


def agreement(ingest: dict[str, Any], baseline: dict[str, Any]) -> tuple[bool, list[list[str]]]:
    """Per source: silver rows (from the tables) and quarantined rows must be equal.

    Bronze rows and the inserted/updated/duplicate tallies are compared as well, for diagnosis.
    """
    rows, agree = [], True
    for source in SOURCES:
        i, b = ingest["sources"][source], baseline["sources"][source]
        silver = (i["silver_table_rows"], b["silver_table_rows"])
        quarantined = (i["quarantined"], b["quarantined"])
        same = silver[0] == silver[1] and quarantined[0] == quarantined[1]
        agree &= same
        others = [k for k in ("bronze_rows", "inserted", "updated", "duplicate") if i[k] != b[k]]
        others += ["quarantine table"] if i["quarantine_table_rows"] != b["quarantine_table_rows"] else []
        difference = (
            ""
            if same
            else (
                f"silver {(silver[0] or 0) - (silver[1] or 0):+,}, quarantined {(quarantined[0] or 0) - (quarantined[1] or 0):+,}"
            )
        )
        rows.append(
            [
                source,
                fmt_int(silver[0]),
                fmt_int(silver[1]),
                fmt_int(quarantined[0]),
                fmt_int(quarantined[1]),
                "AGREE" if same else "DISAGREE",
                difference or "-",
                ", ".join(others) or "all equal",
            ]
        )
    return agree, rows


def median_row(case: Case, runs: list[dict[str, Any]]) -> list[str]:
    """A case's summary row: medians over its runs (peak RSS: the largest), the runs' ratios listed."""
    ingest_s = statistics.median(r["ingest"]["seconds"] for r in runs)
    baseline_s = statistics.median(r["baseline"]["seconds"] for r in runs)
    events = runs[0]["events"]
    peak_i = max(r["ingest"]["peak_rss_mb"] for r in runs)
    peak_b = max(r["baseline"]["peak_rss_mb"] for r in runs)
    ratios = "/".join(f"{r['ratio']:.2f}" for r in runs)
    return [
        case.short,
        fmt_int(runs[0]["files"]),
        fmt_int(events),
        f"{ingest_s:.1f}",
        fmt_rate(events / ingest_s),
        f"{baseline_s:.1f}",
        fmt_rate(events / baseline_s),
        f"{statistics.median(r['ratio'] for r in runs):.2f}" + (f" ({ratios})" if len(runs) > 1 else ""),
        f"{peak_i:,.0f}",
        f"{peak_b:,.0f}",
        f"{peak_i / peak_b:.2f}",
        f"{statistics.median(r['ingest']['cpu_seconds'] for r in runs):.0f}",
        f"{statistics.median(r['baseline']['cpu_seconds'] for r in runs):.0f}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scales", default=None, help="comma-separated simulate.scale values (default: 1, or none with --many-files)"
    )
    parser.add_argument(
        "--many-files",
        default="",
        help="comma-separated numbers of small delivery files, e.g. 1000,4000 (a quarter per source, one a day)",
    )
    parser.add_argument(
        "--many-files-scale",
        type=float,
        default=MANY_FILES_SCALE,
        help=f"simulate.scale of the many-files cases (default: {MANY_FILES_SCALE:g})",
    )
    parser.add_argument("--workdir", default=None, help="where run directories go (default: a new /tmp/bench_ingest_*)")
    parser.add_argument("--env", default="local", help="Kedro configuration environment (default: local)")
    parser.add_argument("--chunk-rows", type=int, default=500_000, help="baseline: about this many lines per chunk")
    parser.add_argument(
        "--deep-compare",
        action="store_true",
        help=f"compare silver/quarantine contents at every scale (default: scales <= {DEEP_COMPARE_MAX_SCALE:g})",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep each scale's run directory (default: delete it after a successful scale)",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=3,
        help="runs per case, each simulate → ingest → baseline in turn (interleaved); medians reported (default 3)",
    )
    parser.add_argument(
        "--incremental-days",
        type=int,
        default=0,
        help="also time an incremental run: these last delivery days ingested into the tables of the others",
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds allowed per phase (default: none)")
    parser.add_argument("--phase", choices=["simulate", "ingest", "baseline", "compare"], help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--days", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.phase:  # a child process: cwd is the run directory
        if args.phase == "simulate":
            result = phase_simulate(args.scale, args.env, args.days)
        elif args.phase == "ingest":
            result = phase_ingest(args.env)
        elif args.phase == "baseline":
            result = phase_baseline(args.env, args.chunk_rows)
        else:
            result = phase_compare(args.env)
        write_result(Path(args.result), result)
        return 0

    many = [int(float(n)) for n in args.many_files.split(",") if n.strip()]
    scales = [
        float(s) for s in (args.scales if args.scales is not None else ("" if many else "1")).split(",") if s.strip()
    ]
    cases = [Case(scale) for scale in scales] + [Case(args.many_files_scale, max(1, n // len(SOURCES))) for n in many]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_ingest_", dir="/tmp")).resolve()
    project_data = (PROJECT_ROOT / "data").resolve()
    if workdir == PROJECT_ROOT or PROJECT_ROOT in workdir.parents:
        raise SystemExit(
            f"--workdir must be outside the project ({PROJECT_ROOT}), e.g. under /tmp; the project's {project_data} is never used"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"bench_ingest: {'; '.join(case.label for case in cases)}; work dir {workdir}; "
        f"{os.cpu_count()} CPUs; python {sys.version.split()[0]}"
    )

    summary, verdicts, incremental_rows = [], [], []
    for case in cases:
        runs: list[dict[str, Any]] = []  # the case's complete runs
        for run in range(args.runs):
            scale = case.scale
            run_dir = prepare_run_dir(workdir, case)
            print(f"\n=== {case.label}, run {run + 1} of {args.runs}  ({run_dir})")
            sim = run_phase(
                "simulate", run_dir, args, ["--scale", str(scale), *(["--days", str(case.days)] if case.days else [])]
            )
            if sim is None:
                verdicts.append((case, "simulate failed"))
                continue
            total_lines = sum(sim["lines"].values())
            files = sum(sim["files"].values())
            print(
                f"  simulate: {total_lines:,} landing lines in {sum(sim['files'].values())} files, "
                f"{sum(sim['bytes'].values()) / 1e6:,.0f} MB, {sim['seconds']:.1f} s (not measured), "
                f"peak RSS {sim['peak_rss_mb']:,.0f} MB"
            )
            print_table(
                ["source", "files", "lines", "MB"],
                [[s, sim["files"][s], fmt_int(sim["lines"][s]), f"{sim['bytes'][s] / 1e6:,.1f}"] for s in SOURCES],
            )

            print("  running INGEST (Spark pipeline) ...", flush=True)
            ingest = run_phase("ingest", run_dir, args)
            if ingest is not None:
                print(
                    f"  ingest: {ingest['seconds']:.1f} s wall, {ingest['cpu_seconds']:.1f} s CPU, engine start "
                    f"{ingest['startup_seconds']:.2f} s (not measured), peak RSS {ingest['peak_rss_mb']:,.0f} MB, "
                    f"{contention(ingest)}"
                )
                print("  audit monitoring/ingest_audit, summed per source:")
                print_table(
                    ["source", "batches", "bronze_rows", *OUTCOMES, "balanced"],
                    [
                        [s, v["batches"], fmt_int(v["bronze_rows"]), *(fmt_int(v[o]) for o in OUTCOMES), v["balanced"]]
                        for s, v in ingest["sources"].items()
                    ],
                )
                nodes = sorted(ingest["nodes"], key=lambda n: -n["total"])
                print("  ingest nodes by wall time (total = inputs loaded + function + outputs saved):")
                print_table(
                    ["node", "total s", "share"],
                    [[n["node"], f"{n['total']:.1f}", f"{n['total'] / ingest['seconds']:.0%}"] for n in nodes[:10]],
                )
                by_step: dict[str, float] = {}
                for n in ingest["nodes"]:
                    step = n["node"].split(".")[-1]
                    by_step[step] = by_step.get(step, 0.0) + n["total"]
                print(
                    "  per step, all sources: "
                    + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(by_step.items(), key=lambda kv: -kv[1]))
                )

            print("  running BASELINE (pandas + deltalake) ...", flush=True)
            baseline = run_phase("baseline", run_dir, args)
            if baseline is not None:
                print(
                    f"  baseline: {baseline['seconds']:.1f} s wall, {baseline['cpu_seconds']:.1f} s CPU, "
                    f"peak RSS {baseline['peak_rss_mb']:,.0f} MB, {contention(baseline)}; per source: "
                    + ", ".join(f"{k} {v:.1f} s" for k, v in baseline["source_seconds"].items())
                )
                print(
                    "  baseline steps, all sources: "
                    + ", ".join(f"{k} {v:.1f} s" for k, v in baseline["steps"].items())
                    + " (bronze write = the part not overlapped with parsing)"
                )
                print_table(
                    ["source", "batches", "bronze_rows", *OUTCOMES, "balanced"],
                    [
                        [s, v["batches"], fmt_int(v["bronze_rows"]), *(fmt_int(v[o]) for o in OUTCOMES), v["balanced"]]
                        for s, v in baseline["sources"].items()
                    ],
                )

            if ingest is None or baseline is None:
                verdicts.append((case, "incomplete"))
                summary.append(
                    [
                        case.short,
                        fmt_int(files),
                        fmt_int(total_lines),
                        f"{ingest['seconds']:.1f}" if ingest else "failed",
                        "-",
                        f"{baseline['seconds']:.1f}" if baseline else "failed",
                        "-",
                        "-",
                        "-",
                        "-",
                        "-",
                        "-",
                        "-",
                    ]
                )
                continue

            events_i = sum(v["bronze_rows"] for v in ingest["sources"].values())
            events_b = sum(v["bronze_rows"] for v in baseline["sources"].values())
            rate_i, rate_b = events_i / ingest["seconds"], events_b / baseline["seconds"]
            agree, rows = agreement(ingest, baseline)
            print(
                "  agreement (silver rows and quarantined rows per source; also checked: bronze rows and "
                "inserted/updated/duplicate tallies):"
            )
            print_table(
                [
                    "source",
                    "silver ingest",
                    "silver baseline",
                    "quarant. ingest",
                    "quarant. baseline",
                    "verdict",
                    "ingest - baseline",
                    "other figures",
                ],
                rows,
            )
            verdict = "AGREE" if agree else "DISAGREE"
            print(f"  => {verdict}")
            if args.deep_compare or scale <= DEEP_COMPARE_MAX_SCALE:
                compare = run_phase("compare", run_dir, args)
                if compare is not None:
                    print("  content comparison (silver by event_id; quarantine by batch and raw line):")
                    clean = True
                    for source in SOURCES:
                        entry = compare[source]
                        issues = {k: v for k, v in entry.items() if v and "examples" not in k}
                        if issues:
                            clean = False
                            print(f"    {source}: " + json.dumps(entry, default=str))
                        else:
                            print(f"    {source}: identical silver values and quarantined rows/messages")
                    verdict += "" if clean else " (content differs, see above)"
            incremental = None
            if args.incremental_days:
                print(f"  running INCREMENTAL (the last {args.incremental_days} days into the others') ...", flush=True)
                incremental = run_incremental(run_dir, args)
                if incremental is None:
                    verdict += "; incremental run failed"
                else:
                    same, _ = agreement(incremental, baseline)
                    print(
                        f"  incremental: the other days {incremental['first_seconds']:.1f} s "
                        f"(peak RSS {incremental['first_peak_rss_mb']:,.0f} MB), then "
                        f"{fmt_int(incremental['events'])} events in {incremental['seconds']:.1f} s wall, "
                        f"{incremental['cpu_seconds']:.1f} s CPU, peak RSS {incremental['peak_rss_mb']:,.0f} MB; "
                        f"its tables against the baseline's: {'AGREE' if same else 'DISAGREE'}"
                    )
                    verdict += "" if same else "; incremental DISAGREES"
            verdicts.append((case, verdict))
            runs.append(
                {
                    "files": files,
                    "events": events_i,
                    "ingest": ingest,
                    "baseline": baseline,
                    "ratio": rate_i / rate_b,
                    "incremental": incremental,
                }
            )
            if not args.keep:
                shutil.rmtree(run_dir, ignore_errors=True)
        if runs:
            summary.append(median_row(case, runs))
        increments = [r["incremental"] for r in runs if r.get("incremental")]
        if increments:
            seconds = statistics.median(r["seconds"] for r in increments)
            events = statistics.median(r["events"] for r in increments)
            incremental_rows.append(
                [
                    case.short,
                    fmt_int(events),
                    f"{seconds:.1f}",
                    fmt_int(events / seconds),
                    f"{max(r['peak_rss_mb'] for r in increments):,.0f}",
                    f"{statistics.median(r['cpu_seconds'] for r in increments):.0f}",
                ]
            )

    print(
        "\n=== summary (case = simulate.scale or number of small files; events = bronze rows; seconds, events/s "
        "and CPU s: medians over the case's runs; ratio = ingest events/s / baseline events/s, the median "
        "(each run's); peak RSS: the largest of the runs; RSS ratio = ingest peak RSS / baseline peak RSS)"
    )
    print_table(
        [
            "case",
            "files",
            "events",
            "ingest s",
            "ingest ev/s",
            "baseline s",
            "baseline ev/s",
            "ratio",
            "ingest peak RSS MB",
            "baseline peak RSS MB",
            "RSS ratio",
            "ingest CPU s",
            "baseline CPU s",
        ],
        summary,
    )
    if incremental_rows:
        print(
            f"\n=== incremental runs (the last {args.incremental_days} delivery days into the tables of the "
            "others; seconds: medians; peak RSS: the largest)"
        )
        print_table(["case", "events", "seconds", "events/s", "peak RSS MB", "CPU s"], incremental_rows)
    for case, verdict in verdicts:
        print(f"  {case.label}: {verdict}")
    return 0 if all(v.startswith("AGREE") and "differs" not in v for _, v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
