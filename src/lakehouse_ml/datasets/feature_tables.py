"""Every feature table as one Kedro dataset: a mapping of table name to Delta table.

Feature tables are declared in configuration (``conf/<env>/feature_tables/``), so no catalog entry
can name them. One entry with ``{table}`` in its path stands for all of them:

- ``load()`` returns a lazy mapping: a table is opened when a node asks for it by name;
- ``save({table: {"rows": DataFrame, "keys": [...], "stamp": {...}}})`` writes the tables one by
  one in name order, each in its own Delta commit(s): the rows (a MERGE on the table's own
  contract keys, with delete markers, or an overwrite), then its contract stamp (properties and
  column comments, committed only where they differ). A crash between two tables leaves the
  first one written and the second not; the features pipeline records a refresh only after the
  save, so its rerun recomputes both scopes and the MERGE of the first is a no-op.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from deltalake import DeltaTable
from kedro.io.core import AbstractDataset, DatasetError
from pyspark.sql import DataFrame

from lakehouse_ml.datasets.delta import DeltaMetadataDataset, SparkDeltaDataset
from lakehouse_ml.lakehouse import table_uri

PLACEHOLDER = "{table}"


def _template(filepath: str) -> str:
    if filepath.count(PLACEHOLDER) != 1 or PLACEHOLDER not in Path(filepath).name:
        raise DatasetError(
            f"feature tables '{filepath}': the path must hold '{PLACEHOLDER}' once, in its last component "
            "(e.g. data/lakehouse/main/features/{table})"
        )
    return filepath


def _table_path(template: str, name: str) -> str:
    return template.replace(PLACEHOLDER, name)


def _built(template: str, name: object) -> bool:
    """Whether the table ``name`` exists under the template."""
    return isinstance(name, str) and DeltaTable.is_deltatable(table_uri(_table_path(template, name)))


def _existing(template: str) -> list[str]:
    """The names of the tables that exist under the template, in name order."""
    if "://" in template and not template.startswith("file://"):
        # Nodes ask for tables by name; listing is for people, on local lakehouses.
        raise DatasetError(
            f"feature tables '{template}': listing the tables needs a local path; ask for a table by name"
        )
    folder, name = Path(table_uri(_table_path(template, "_"))).parent, Path(template).name
    prefix, suffix = name.split(PLACEHOLDER)
    if not folder.is_dir():
        return []
    found = (p.name[len(prefix) : len(p.name) - len(suffix)] for p in folder.glob(f"{prefix}*{suffix}"))
    return sorted(n for n in found if n and _built(template, n))


class FeatureTables(Mapping[str, DataFrame]):
    """The feature tables that exist, read lazily by name."""

    def __init__(self, template: str, load_args: dict[str, Any]) -> None:
        self._template = template
        self._load_args = load_args

    def path(self, name: str) -> str:
        """The table's path."""
        return _table_path(self._template, name)

    def __getitem__(self, name: str) -> DataFrame:
        dataset = SparkDeltaDataset(filepath=self.path(name), load_args=self._load_args)
        if not dataset.exists():
            raise KeyError(f"feature table '{name}' has not been built at {self.path(name)}: run the features pipeline")
        return dataset.load()

    def __contains__(self, name: object) -> bool:
        return _built(self._template, name)

    def __iter__(self) -> Iterator[str]:
        return iter(_existing(self._template))

    def __len__(self) -> int:
        return len(_existing(self._template))


class FeatureTablesDataset(AbstractDataset[Mapping[str, Mapping[str, Any]], FeatureTables]):
    """All feature tables under one path template (``.../features/{table}``).

    ``write_mode``: ``merge`` (each table on the ``keys`` its update names, deleting rows whose
    ``merge_delete_column`` is true) or ``overwrite``; ``skip_empty``: an empty update leaves an
    existing table as it is (work tables whose rows are told apart by refresh id).
    """

    def __init__(
        self,
        *,
        filepath: str,
        write_mode: str = "merge",
        merge_delete_column: str | None = None,
        skip_empty: bool = False,
        load_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if write_mode not in ("merge", "overwrite"):
            raise DatasetError(
                f"feature tables '{filepath}': write_mode must be merge or overwrite, got {write_mode!r}"
            )
        self._template = _template(filepath)
        self._write_mode = write_mode
        self._merge_delete_column = merge_delete_column
        self._skip_empty = skip_empty
        self._load_args = dict(load_args or {})
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._template, "write_mode": self._write_mode, "skip_empty": self._skip_empty}

    def load(self) -> FeatureTables:
        """The tables, opened when asked for by name."""
        return FeatureTables(self._template, self._load_args)

    def save(self, data: Mapping[str, Mapping[str, Any]]) -> None:
        """Write every table's update, one table at a time in name order (see the module docstring)."""
        for name in sorted(data):
            self.save_table(name, data[name])

    def save_table(self, name: str, update: Mapping[str, Any]) -> None:
        """Write one table's rows, then stamp its contract."""
        path = _table_path(self._template, name)
        keys = list(update.get("keys") or [])
        if self._write_mode == "merge" and not keys:
            raise DatasetError(f"feature table '{name}': a merge needs the table's keys (update['keys'])")
        SparkDeltaDataset(
            filepath=path,
            write_mode=self._write_mode,
            merge_keys=keys or None,
            merge_delete_column=self._merge_delete_column,
            skip_empty=self._skip_empty,
        ).save(update["rows"])
        if update.get("stamp"):
            DeltaMetadataDataset(filepath=path).save(update["stamp"])


class FeatureTableInfos(Mapping[str, dict[str, Any]]):
    """Each feature table's metadata (version, properties, column comments), read when asked for.

    A table that does not exist yet has version ``None``, like :class:`DeltaMetadataDataset`.
    """

    def __init__(self, template: str) -> None:
        self._template = template

    def __getitem__(self, name: str) -> dict[str, Any]:
        return DeltaMetadataDataset(filepath=_table_path(self._template, name)).load()

    def __contains__(self, name: object) -> bool:
        return _built(self._template, name)

    def __iter__(self) -> Iterator[str]:
        return iter(_existing(self._template))

    def __len__(self) -> int:
        return len(_existing(self._template))


class FeatureTableInfoDataset(AbstractDataset[None, FeatureTableInfos]):
    """The metadata of every feature table under a path template; read-only.

    Transcode it with the tables' entry (``feature_tables@info`` beside ``feature_tables@spark``)
    and Kedro runs its readers after the writer: they see the versions this run committed.
    """

    def __init__(self, *, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._template = _template(filepath)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._template}

    def load(self) -> FeatureTableInfos:
        return FeatureTableInfos(self._template)

    def save(self, data: None) -> None:
        raise DatasetError(f"feature tables '{self._template}': the info dataset is read-only; save the tables' entry")
