"""Delta tables' locations, and their versions and history for lineage, read from the transaction log
with ``deltalake``.

Sail has no ``DESCRIBE HISTORY``; the log is the same on every engine, so delta-rs reads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deltalake import DeltaTable
from kedro.io.core import get_protocol_and_path
from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def table_uri(filepath: str) -> str:
    """Return an absolute location for ``filepath``: Spark resolves relative paths elsewhere."""
    protocol, path = get_protocol_and_path(filepath)
    if protocol == "file":
        return Path(path).expanduser().resolve().as_posix()
    return filepath


# The delete marker of rows to write: a true row is not written, and its key is left without a row
# (SparkDeltaDataset's ``merge_delete_column``).
DELETED = "_deleted"


def table_version(filepath: str) -> int | None:
    """Return the current version of the Delta table at ``filepath``, or ``None`` if absent."""
    uri = table_uri(filepath)
    if not DeltaTable.is_deltatable(uri):
        return None
    return DeltaTable(uri).version()


def table_history(filepath: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Return the commits of the table, newest first (version, timestamp, operation, metrics)."""
    return DeltaTable(table_uri(filepath)).history(limit)


def table_lineage(name: str, filepath: str) -> dict[str, Any]:
    """Return what a run should record about an input table: name, path, version, last commit."""
    uri = table_uri(filepath)
    history = table_history(filepath, limit=1)
    last = history[0] if history else {}
    return {
        "table": name,
        "path": uri,
        "version": DeltaTable(uri).version(),
        "operation": last.get("operation"),
        "timestamp": last.get("timestamp"),
    }


def changed_rows(before: DataFrame, after: DataFrame, columns: list[str]) -> DataFrame:
    """Rows, projected to ``columns``, that are in exactly one of two versions of a table.

    The scope of every incremental refresh: what changed between the input version a derived
    table last reflected and the input now (inserted, updated and deleted rows alike).
    """
    old, new = before.select(*columns), after.select(*columns)
    return new.subtract(old).unionByName(old.subtract(new))


def with_deletes(rows: DataFrame, existing_in_scope: DataFrame | None, keys: list[str]) -> DataFrame:
    """Recomputed rows plus a delete marker for every existing row of the scope that no longer exists.

    MERGEd on ``keys``, the result leaves the scope exactly as recomputed. ``None``: nothing
    exists yet (or the table is being rebuilt).
    """
    rows = rows.withColumn(DELETED, F.lit(False))
    if existing_in_scope is None:
        return rows
    gone = existing_in_scope.select(*keys).join(rows.select(*keys), keys, "left_anti")
    # The engine types the missing columns of the markers like those of ``rows``.
    return rows.unionByName(gone.withColumn(DELETED, F.lit(True)), allowMissingColumns=True)
