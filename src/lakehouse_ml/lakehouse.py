"""Delta table versions and history for lineage, read from the transaction log with ``deltalake``.

Sail has no ``DESCRIBE HISTORY``; the log is the same on every engine, so delta-rs reads it.
"""

from __future__ import annotations

from typing import Any

from deltalake import DeltaTable

from lakehouse_ml.datasets.delta import table_uri


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
