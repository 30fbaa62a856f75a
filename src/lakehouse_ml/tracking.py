"""What the project's MLflow runs record: the parent tag, the commit, the environment, and a Delta
input's provenance (table name, version, feature-contract hash).

The runs themselves are opened by ``lakehouse_ml.hooks.NodeRunHooks`` (one per node) and by the
tuning stage (one per trial).
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from lakehouse_ml.features.contracts import CONTRACT_HASH_PROPERTY

PROJECT = "lakehouse_ml"
PARENT_TAG = "mlflow.parentRunId"
ENVIRONMENT_PACKAGES = (
    "kedro",
    "kedro-datasets",
    "kedro-mlflow",
    "mlflow",
    "pyspark",
    "pysail",
    "deltalake",
    "pandas",
    "scikit-learn",
    "optuna",
    "pandera",
)


def git_sha(path: str | os.PathLike | None = None) -> str:
    """The commit checked out at ``path`` (default: cwd), or ``unknown`` outside a git checkout."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=str(path) if path else None,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return result.stdout.strip() or "unknown"
    except Exception:  # noqa: BLE001 - no git, not a checkout, bad path: all "unknown"
        return "unknown"


def environment_info() -> dict[str, Any]:
    """Python, library versions and the Spark engine's mode (no URLs, no credentials)."""
    versions = {}
    for package in ENVIRONMENT_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    try:
        from lakehouse_ml.engine import ENGINE

        config = ENGINE.config
        spark = {
            "mode": config.mode if config else None,
            "remote": bool(config and config.mode == "remote"),
            "running": bool(ENGINE.running),
        }
    except Exception as exc:  # noqa: BLE001
        spark = {"mode": None, "remote": None, "error": type(exc).__name__}
    return {
        "project": PROJECT,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": versions,
        "spark_engine": spark,
    }


def table_name_from_path(path: str) -> str | None:
    """``…/data/lakehouse/<catalog>/<schema>/<table>`` → ``<catalog>.<schema>.<table>``."""
    parts = Path(path.rstrip("/")).parts
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "lakehouse" and len(parts) - i - 1 == 3:
            return ".".join(parts[i + 1 :])
    return None


def delta_input(catalog: Any, name: str) -> dict[str, Any] | None:
    """What a run records about input ``name`` if it is a lakehouse Delta table, else ``None``."""
    from deltalake import DeltaTable

    from lakehouse_ml.datasets.delta import DeltaMetadataDataset, PandasDeltaDataset, SparkDeltaDataset

    dataset = catalog.get(name)
    if not isinstance(dataset, (SparkDeltaDataset, PandasDeltaDataset, DeltaMetadataDataset)):
        return None
    uri, pinned = dataset.table_location
    if not DeltaTable.is_deltatable(uri):
        return None
    table = DeltaTable(uri, version=pinned) if pinned is not None else DeltaTable(uri)
    configuration = dict(table.metadata().configuration or {})
    return {
        "table": table_name_from_path(uri) or name,
        "path": uri,
        "version": table.version(),
        "contract_hash": configuration.get(CONTRACT_HASH_PROPERTY),
    }
