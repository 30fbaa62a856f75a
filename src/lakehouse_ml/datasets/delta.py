"""Delta Lake tables as Kedro datasets: Spark (read/write through Spark Connect) and pandas.

kedro-datasets' Spark datasets read and write Delta over Spark Connect but cannot upsert, and
their ``exists()`` is wrong on Connect (see docs/pages/engine.md). ``SparkDeltaDataset`` adds:

- write modes ``overwrite``, ``append``, ``merge`` (SQL ``MERGE INTO`` on ``merge_keys``) and
  ``replace`` (Delta ``replaceWhere`` on the values of ``replace_keys`` present in the data);
- ``merge_delete_column``: rows flagged true are delete markers, never written: a MERGE deletes
  the row of their key, a replace empties their keys' rows (the keys of a scope left with no row);
- ``merge_insert_column``: rows flagged true are keys the table does not hold (the writer knows
  it, e.g. from a lookup it made anyway): appended first, and only the other rows are MERGEd. A
  MERGE joins every row of its source with the table, holding one side in memory;
- ``rebuild: true`` (usually ``${runtime_params:...}``): the next save overwrites whatever the mode;
- empty appends/merges/replaces (and overwrites with ``skip_empty: true``) are skipped once the
  table exists, so re-running on unchanged input adds no table version; the first save always
  creates the table, even when empty;
- ``exists()`` through the Delta log (``deltalake``), and time travel via ``load_args``.

Both offer kedro-viz a ``preview()``: the first rows, read with ``deltalake`` (no Spark session).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pandas as pd
import pyarrow as pa
from deltalake import DeltaTable, QueryBuilder, write_deltalake
from kedro.io.core import AbstractDataset, DatasetError
from kedro_datasets._typing import TablePreview  # the type kedro-viz's docs name for table previews
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakehouse_ml.capabilities import INVALID_COLUMN_CHARACTERS, invalid_column_names, portable
from lakehouse_ml.engine import get_spark
from lakehouse_ml.lakehouse import table_uri

logger = logging.getLogger(__name__)

WRITE_MODES = ("overwrite", "append", "merge", "replace")


def _quoted(column: str) -> str:
    """Return ``column`` as a SQL identifier for delta-rs' query engine."""
    return '"' + column.replace('"', '""') + '"'


def _sql_literal(value: str, data_type: str) -> str:
    """Render a key value (collected as a string in the session time zone) as a SQL literal.

    Casting the session-local string back keeps dates and timestamps exact whatever the
    client's time zone (collected datetimes would be shifted to it).
    """
    text = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"CAST('{text}' AS {data_type})"


def _quote(column: str) -> str:
    return "`" + column.replace("`", "``") + "`"


def preview_table(
    filepath: str, nrows: int, *, version: int | None = None, columns: list[str] | None = None
) -> TablePreview:
    """The first ``nrows`` rows of a Delta table as kedro-viz's table preview (``columns``, ``index``,
    ``data``), read with delta-rs' own engine: only the files the limit needs, no Spark session.

    Values are plain Python (lists stay lists, timestamps datetimes) so the preview serialises as JSON.
    """
    uri = table_uri(filepath)
    if not DeltaTable.is_deltatable(uri):
        raise DatasetError(f"Delta table '{filepath}' does not exist yet: run the pipeline that writes it first")
    table = DeltaTable(uri, version=version)
    selected = ", ".join(_quoted(c) for c in columns) if columns else "*"
    batches = QueryBuilder().register("t", table).execute(f"SELECT {selected} FROM t LIMIT {int(nrows)}")
    rows = pa.table(batches).to_pylist()
    names = list(columns) if columns else [field.name for field in table.schema().to_arrow()]
    return TablePreview(
        {"columns": names, "index": list(range(len(rows))), "data": [[row[c] for c in names] for row in rows]}
    )


class _DeltaTableLocation:
    """What a run records of a Delta dataset it reads: where the table is and which version it pins."""

    _uri: str

    @property
    def table_location(self) -> tuple[str, int | None]:
        """The table's absolute URI and the version this dataset reads (``None``: the latest)."""
        return self._uri, self._pinned_version()

    def _pinned_version(self) -> int | None:
        return None


class SparkDeltaDataset(_DeltaTableLocation, AbstractDataset[DataFrame, DataFrame]):
    """A path-based Delta table read and written through the process's Spark session."""

    def __init__(  # noqa: PLR0913
        self,
        *,
        filepath: str,
        write_mode: str = "overwrite",
        merge_keys: list[str] | None = None,
        merge_delete_column: str | None = None,
        merge_insert_column: str | None = None,
        replace_keys: list[str] | None = None,
        rebuild: bool = False,
        schema_if_missing: str | None = None,
        skip_empty: bool = False,
        load_args: dict[str, Any] | None = None,
        save_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if write_mode not in WRITE_MODES:
            raise DatasetError(
                f"Delta table '{filepath}': write_mode must be one of {', '.join(WRITE_MODES)}, got {write_mode!r}"
            )
        if write_mode == "merge" and not merge_keys:
            raise DatasetError(f"Delta table '{filepath}': write_mode 'merge' needs merge_keys")
        if merge_insert_column and write_mode != "merge":
            raise DatasetError(
                f"Delta table '{filepath}': merge_insert_column needs write_mode 'merge', got {write_mode!r}"
            )
        if write_mode == "replace" and not replace_keys:
            raise DatasetError(f"Delta table '{filepath}': write_mode 'replace' needs replace_keys")
        file_size = (save_args or {}).get("targetFileSize")
        if file_size is not None and not (str(file_size).isdigit() and int(file_size) > 0):
            # Checked here: the engine would only fail at the first write, deep into a run.
            raise DatasetError(
                f"Delta table '{filepath}': save_args.targetFileSize must be a positive whole number of "
                f"bytes (globals delta_target_file_size for the ingest tables), got {file_size!r}"
            )
        self._filepath = filepath
        self._uri = table_uri(filepath)
        self._write_mode = write_mode
        self._merge_keys = list(merge_keys or [])
        self._merge_delete_column = merge_delete_column
        self._merge_insert_column = merge_insert_column
        self._replace_keys = list(replace_keys or [])
        self._rebuild = str(rebuild).lower() in ("true", "1", "yes")
        self._schema_if_missing = schema_if_missing
        self._skip_empty = skip_empty
        self._load_args = dict(load_args or {})
        self._save_args = dict(save_args or {})
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {
            "filepath": self._filepath,
            "write_mode": self._write_mode,
            "merge_keys": self._merge_keys,
            "replace_keys": self._replace_keys,
            "rebuild": self._rebuild,
            "schema_if_missing": self._schema_if_missing,
            "load_args": self._load_args,
        }

    def _exists(self) -> bool:
        return DeltaTable.is_deltatable(self._uri)

    def _pinned_version(self) -> int | None:
        pinned = self._load_args.get("versionAsOf", self._load_args.get("versionasof"))
        return None if pinned is None else int(pinned)

    def load(self) -> DataFrame:
        """Read the table (or the version in ``load_args``) lazily.

        A table that does not exist yet loads as an empty frame of ``schema_if_missing`` when
        that is set (e.g. a log read before its first write), and raises otherwise.
        """
        if not self._exists():
            if self._schema_if_missing:
                return get_spark().createDataFrame([], self._schema_if_missing)
            raise DatasetError(
                f"Delta table '{self._filepath}' does not exist yet: run the pipeline that writes it first"
            )
        return get_spark().read.format("delta").options(**self._load_args).load(self._uri)

    def preview(self, nrows: int = 5) -> TablePreview:
        """The table's first ``nrows`` rows for kedro-viz (see ``preview_table``)."""
        return preview_table(self._filepath, nrows)

    def save(self, data: DataFrame) -> None:
        """Write ``data`` according to the write mode (see the module docstring)."""
        refused = invalid_column_names(data.columns)
        if refused:
            raise DatasetError(
                f"Delta table '{self._filepath}': column names {refused} contain characters Delta "
                f"Lake refuses on JVM Spark ({INVALID_COLUMN_CHARACTERS!r}); rename them before "
                "saving (DataFrame.withColumnRenamed), so the table opens on every engine"
            )
        data = portable(data)
        exists = self._exists()
        mode = "overwrite" if (self._rebuild or not exists) else self._write_mode
        if self._merge_delete_column:
            # A null delete flag means "keep", in every branch below.
            flag = self._merge_delete_column
            data = data.withColumn(flag, F.coalesce(F.col(flag).cast("boolean"), F.lit(False)))
        if exists and (mode != "overwrite" or self._skip_empty) and data.isEmpty():
            logger.info("Delta table '%s': nothing to %s", self._filepath, mode)
            return
        if exists and mode != "overwrite" and self.load().isEmpty():
            # An empty table (created by a first run that had nothing to write) takes the rows and
            # their schema: a MERGE would refuse columns the empty table was created without.
            mode = "overwrite"
        if self._merge_insert_column and mode != "merge":
            data = data.drop(self._merge_insert_column)
        try:
            if mode == "merge":
                self._merge(data)
            elif mode == "replace":
                self._replace(data)
            else:
                if self._merge_delete_column:
                    # Delete markers only mean something to MERGE and replace; a fresh table never
                    # holds them.
                    data = data.filter(~F.col(self._merge_delete_column)).drop(self._merge_delete_column)
                self._write(data, mode)
        except Exception as error:
            if "Failed to commit transaction" not in str(error):
                raise
            raise DatasetError(self._conflict_message(mode)) from error
        # Rebuild once per process, after a successful write: later saves use the normal mode.
        self._rebuild = False

    def _conflict_message(self, mode: str) -> str:
        # Sail reports a lost optimistic-concurrency race only as "Failed to commit transaction: 0".
        return (
            f"Delta table '{self._filepath}': another writer committed to this table while this run's "
            f"{mode} was being committed, so this write was not committed (the table holds none of it). "
            "Runs of one environment take the lakehouse's run lock (_run.lock in the catalog's folder "
            "names its last holder), so the other writer ran outside it: another environment or a "
            "process pointed at the same tables. Run again once it is done."
        )

    def _write(self, data: DataFrame, mode: str, **options: Any) -> None:
        writer = data.write.format("delta").mode(mode)
        save_args = dict(self._save_args)
        partition_by = save_args.pop("partitionBy", None)
        if partition_by:
            writer = writer.partitionBy(*([partition_by] if isinstance(partition_by, str) else partition_by))
        options = {**save_args, **options}
        if mode == "overwrite" and "replaceWhere" not in options:
            # A whole-table overwrite takes the new schema; mergeSchema (for the other modes) is
            # then redundant, and engines refuse both options together.
            options.pop("mergeSchema", None)
            options.setdefault("overwriteSchema", "true")
        elif "mergeSchema" in options:
            options.pop("overwriteSchema", None)
        writer.options(**options).save(self._uri)

    def _replace(self, data: DataFrame) -> None:
        types = {field.name: field.dataType.simpleString() for field in data.schema.fields}
        keys = data.select(*[F.col(k).cast("string").alias(k) for k in self._replace_keys]).distinct().collect()
        if any(row[k] is None for row in keys for k in self._replace_keys):
            raise DatasetError(
                f"Delta table '{self._filepath}': replace_keys {self._replace_keys} must not contain nulls"
            )
        if self._merge_delete_column:
            data = data.filter(~F.col(self._merge_delete_column)).drop(self._merge_delete_column)
        # The predicate is built from the data itself, so every new row satisfies it (Sail does
        # not check new rows against replaceWhere; Delta-Spark does).
        self._write(data, "overwrite", replaceWhere=self._replace_predicate(keys, types), overwriteSchema="false")

    def _replace_predicate(self, keys: list[Any], types: dict[str, str]) -> str:
        """``k IN (…)`` grouped by the leading keys: a long OR chain overflows Sail's planner."""
        *leading, last = self._replace_keys
        groups: dict[tuple[str, ...], list[str]] = {}
        for row in keys:
            groups.setdefault(tuple(row[k] for k in leading), []).append(row[last])
        clauses = []
        for prefix, values in sorted(groups.items()):
            equals = [f"{_quote(k)} = {_sql_literal(v, types[k])}" for k, v in zip(leading, prefix)]
            listed = ", ".join(_sql_literal(v, types[last]) for v in sorted(values))
            clauses.append("(" + " AND ".join([*equals, f"{_quote(last)} IN ({listed})"]) + ")")
        return " OR ".join(clauses)

    def _merge(self, data: DataFrame) -> None:
        self._check_unique_keys(data)
        if self._merge_insert_column:
            flag = F.coalesce(F.col(self._merge_insert_column).cast("boolean"), F.lit(False))
            inserts = data.filter(flag).drop(self._merge_insert_column)
            data = data.filter(~flag).drop(self._merge_insert_column)
            # Appended before the MERGE. A run stopped in between leaves the inserts committed: a
            # writer retrying must flag none of them again (its MERGE then finds them).
            if not inserts.isEmpty():
                self._write(inserts, "append")
            if data.isEmpty():
                return
        spark = data.sparkSession
        view = f"merge_source_{uuid.uuid4().hex}"
        data.createOrReplaceTempView(view)
        on = " AND ".join(f"t.{_quote(k)} = s.{_quote(k)}" for k in self._merge_keys)
        columns = [c for c in data.columns if c != self._merge_delete_column]
        assignments = ", ".join(f"t.{_quote(c)} = s.{_quote(c)}" for c in columns)
        names = ", ".join(_quote(c) for c in columns)
        values = ", ".join(f"s.{_quote(c)}" for c in columns)
        delete = self._merge_delete_column
        clauses = ([f"WHEN MATCHED AND s.{_quote(delete)} THEN DELETE"] if delete else []) + [
            f"WHEN MATCHED THEN UPDATE SET {assignments}",
            f"WHEN NOT MATCHED {f'AND NOT s.{_quote(delete)} ' if delete else ''}"
            f"THEN INSERT ({names}) VALUES ({values})",
        ]
        try:
            spark.sql(f"MERGE INTO delta.`{self._uri}` AS t USING {view} AS s ON {on} " + " ".join(clauses)).collect()
        finally:
            spark.catalog.dropTempView(view)

    def _check_unique_keys(self, data: DataFrame) -> None:
        dupes = data.groupBy(*self._merge_keys).count().filter(F.col("count") > 1).limit(5).collect()
        if dupes:
            sample = "; ".join(
                ", ".join(f"{k}={row[k]!r}" for k in self._merge_keys) + f" ({row['count']} rows)" for row in dupes
            )
            raise DatasetError(
                f"Delta table '{self._filepath}': MERGE source has several rows per key "
                f"{self._merge_keys}, expected one: {sample}"
            )


class PandasDeltaDataset(_DeltaTableLocation, AbstractDataset[pd.DataFrame, pd.DataFrame]):
    """A Delta table read and written as pandas with ``deltalake`` (no Spark round-trip).

    Reads with delta-rs' own engine (``QueryBuilder``, DataFusion in Rust), not through a pyarrow
    dataset over delta-rs' Python filesystem handler: that path leaves pyarrow I/O threads that
    can abort the interpreter at exit (SIGABRT, "terminate called without an active
    exception"), intermittently even with ``use_threads=False``; see docs/pages/engine.md.
    """

    def __init__(
        self,
        *,
        filepath: str,
        version: int | None = None,
        columns: list[str] | None = None,
        save_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._filepath = filepath
        self._uri = table_uri(filepath)
        self._version = version
        self._columns = columns
        self._save_args = {"mode": "overwrite", **(save_args or {})}
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "version": self._version, "columns": self._columns}

    def _pinned_version(self) -> int | None:
        return self._version

    def _exists(self) -> bool:
        return DeltaTable.is_deltatable(self._uri)

    def load(self) -> pd.DataFrame:
        """Read the table (optionally at ``version``) into pandas."""
        if not self._exists():
            raise DatasetError(
                f"Delta table '{self._filepath}' does not exist yet: run the pipeline that writes it first"
            )
        table = DeltaTable(self._uri, version=self._version)
        columns = ", ".join(_quoted(c) for c in self._columns) if self._columns else "*"
        batches = QueryBuilder().register("t", table).execute(f"SELECT {columns} FROM t")
        # The query engine returns string/binary *view* types, which pandas cannot convert inside
        # lists; cast back to the table's own Arrow schema (what a pyarrow-dataset read returns).
        schema = pa.schema(table.schema().to_arrow())
        if self._columns:
            schema = pa.schema([schema.field(name) for name in self._columns])
        return pa.table(batches).cast(schema).to_pandas(use_threads=False)

    def preview(self, nrows: int = 5) -> TablePreview:
        """The first ``nrows`` rows (of ``version`` and ``columns`` when set) for kedro-viz."""
        return preview_table(self._filepath, nrows, version=self._version, columns=self._columns)

    def save(self, data: pd.DataFrame) -> None:
        """Write ``data`` with delta-rs (``save_args.mode``: overwrite or append)."""
        write_deltalake(self._uri, data, **self._save_args)


class DeltaMetadataDataset(_DeltaTableLocation, AbstractDataset[dict[str, Any], dict[str, Any]]):
    """A Delta table's metadata through its transaction log (``deltalake``), not its rows.

    ``load`` returns ``{path, version, properties, column_comments, timestamp}`` (``version`` is
    ``None`` for a missing table); transcode it with the table's Spark entry (``t@info`` beside
    ``t@spark``) and Kedro runs the reader after the writer. ``save`` takes ``{properties,
    column_comments}`` and commits only what differs, so stamping an unchanged contract adds no
    table version. Sail has no ``ALTER TABLE … SET TBLPROPERTIES``; delta-rs writes the same log.
    """

    def __init__(self, *, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = filepath
        self._uri = table_uri(filepath)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath}

    def _exists(self) -> bool:
        return DeltaTable.is_deltatable(self._uri)

    def load(self) -> dict[str, Any]:
        """Return the table's version, properties and column comments."""
        if not self._exists():
            return {"path": self._uri, "version": None, "properties": {}, "column_comments": {}, "timestamp": None}
        table = DeltaTable(self._uri)
        last = table.history(1)[0]
        return {
            "path": self._uri,
            "version": table.version(),
            "properties": dict(table.metadata().configuration),
            "column_comments": {
                f.name: f.metadata["comment"] for f in table.schema().fields if "comment" in (f.metadata or {})
            },
            "timestamp": last.get("timestamp"),
        }

    def save(self, data: dict[str, Any]) -> None:
        """Set table properties and column comments that differ from the table's."""
        if not data:
            return
        if not self._exists():
            raise DatasetError(f"Delta table '{self._filepath}' does not exist: write it before its metadata")
        current = self.load()
        properties = {
            k: str(v) for k, v in (data.get("properties") or {}).items() if current["properties"].get(k) != str(v)
        }
        table = DeltaTable(self._uri)
        if properties:
            table.alter.set_table_properties(properties, raise_if_not_exists=False)
        columns = {f.name for f in table.schema().fields}
        for column, comment in (data.get("column_comments") or {}).items():
            if column in columns and current["column_comments"].get(column) != comment:
                DeltaTable(self._uri).alter.set_column_metadata(column, {"comment": comment})
