"""A Delta table's versions as a Kedro dataset: its current version and a reader for any other.

Incremental refreshes derive their scope from the difference between the input version they last
reflected (recorded durably next to their output) and the input now. Recording a version instead
of remembering what changed in memory makes every refresh repairable: a run killed between two
commits leaves the recorded version behind, and the next run recomputes the same scope again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from deltalake import DeltaTable
from kedro.io.core import AbstractDataset, DatasetError
from pyspark.sql import DataFrame

from lakehouse_ml.engine import get_spark
from lakehouse_ml.lakehouse import table_uri


@dataclass(frozen=True)
class DeltaVersions:
    """The current version of a Delta table (``None``: no table yet), its table properties and its
    rows at any version."""

    path: str
    version: int | None
    schema_if_missing: str
    properties: dict[str, str] = field(default_factory=dict)

    def at(self, version: int | None) -> DataFrame:
        """The table's rows at ``version`` (lazily); ``None`` gives an empty frame."""
        if version is None:
            return get_spark().createDataFrame([], self.schema_if_missing)
        if self.version is None or not 0 <= version <= self.version:
            raise DatasetError(
                f"Delta table '{self.path}': version {version} was recorded, but the table's versions "
                f"are 0..{self.version}; was it recreated or restored? Rebuild what depends on it "
                "(ingest.full_rebuild or features.full_rebuild)."
            )
        return get_spark().read.format("delta").option("versionAsOf", version).load(self.path)

    @property
    def current(self) -> DataFrame:
        """The table's rows now."""
        return self.at(self.version)

    def only_upserts_since(self, version: int) -> bool:
        """Whether every commit after ``version`` was an append or a MERGE that deleted no row.

        Then each row now is either the row of its key at ``version``, untouched, or one written
        since: a refresh can find what changed from the rows written since, without a diff of
        every row of the two versions. Read from the commits' metrics in the transaction log;
        a commit without them counts as not an upsert.
        """
        if self.version is None or version >= self.version:
            return True
        table = DeltaTable(self.path)
        commits = [c for c in table.history(table.version() - version) if version < c["version"] <= self.version]
        return len(commits) == self.version - version and all(_upserts(commit) for commit in commits)


def _upserts(commit: dict[str, Any]) -> bool:
    """Whether a commit (as ``DeltaTable.history`` gives it) only added or updated rows."""
    if commit.get("operation") == "WRITE":
        return str((commit.get("operationParameters") or {}).get("mode", "")).lower() == "append"
    deleted = (commit.get("operationMetrics") or {}).get("numTargetRowsDeleted")
    return commit.get("operation") == "MERGE" and str(deleted) == "0"


class SparkDeltaVersionsDataset(AbstractDataset[None, DeltaVersions]):
    """Loads a :class:`DeltaVersions` of the table at ``filepath``; read-only.

    ``schema_if_missing`` is the schema of the empty frame a missing table (or version ``None``)
    reads as, so a first run needs no special case.
    """

    def __init__(self, *, filepath: str, schema_if_missing: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = filepath
        self._uri = table_uri(filepath)
        self._schema_if_missing = schema_if_missing
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "schema_if_missing": self._schema_if_missing}

    def _exists(self) -> bool:
        return DeltaTable.is_deltatable(self._uri)

    def load(self) -> DeltaVersions:
        """Return the table's current version and properties and a reader of its versions."""
        if not self._exists():
            return DeltaVersions(self._uri, None, self._schema_if_missing)
        table = DeltaTable(self._uri)
        return DeltaVersions(self._uri, table.version(), self._schema_if_missing, dict(table.metadata().configuration))

    def save(self, data: None) -> None:
        raise DatasetError(f"'{self._filepath}': a versions dataset is read-only; write the table's own entry")
