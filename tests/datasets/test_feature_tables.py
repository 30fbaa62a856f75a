"""Every feature table as one dataset: lazy reads by name, one MERGE and stamp per table in name order."""

from __future__ import annotations

from datetime import datetime

import pytest
from deltalake import DeltaTable
from kedro.io.core import DatasetError

from lakehouse_ml.datasets import FeatureTableInfoDataset, FeatureTablesDataset

SCHEMA = "customer_id string, feature_ts timestamp, x double, _deleted boolean"
KEYS = ["customer_id", "feature_ts"]
T1, T2 = datetime(2026, 1, 1), datetime(2026, 1, 2)


def _rows(spark, rows):
    return spark.createDataFrame(rows, SCHEMA)


def test_a_path_without_one_table_placeholder_is_refused(tmp_path):
    for path in (tmp_path / "features", tmp_path / "{table}" / "rows"):
        with pytest.raises(DatasetError, match=r"must hold '\{table\}' once, in its last component"):
            FeatureTablesDataset(filepath=str(path))
    with pytest.raises(DatasetError, match="write_mode must be merge or overwrite"):
        FeatureTablesDataset(filepath=str(tmp_path / "{table}"), write_mode="append")


def test_tables_are_merged_on_their_keys_with_deletes_and_stamped_in_name_order(spark, tmp_path):
    template = str(tmp_path / "features" / "{table}")
    dataset = FeatureTablesDataset(filepath=template, merge_delete_column="_deleted")
    stamp = {"properties": {"lakehouse_ml.contract.hash": "h1"}}
    dataset.save(
        {
            "b": {"rows": _rows(spark, [("c1", T1, 1.0, False)]), "keys": KEYS, "stamp": stamp},
            "a": {"rows": _rows(spark, [("c1", T1, 2.0, False), ("c2", T1, 3.0, False)]), "keys": KEYS},
        }
    )
    dataset.save(
        {
            "a": {
                "rows": _rows(spark, [("c1", T1, 5.0, False), ("c2", T1, None, True), ("c3", T2, 7.0, False)]),
                "keys": KEYS,
            }
        }
    )
    tables = dataset.load()
    assert list(tables) == ["a", "b"] and len(tables) == 2 and "a" in tables and "nope" not in tables
    rows = sorted((r["customer_id"], r["x"]) for r in tables["a"].collect())
    assert rows == [("c1", 5.0), ("c3", 7.0)]  # upserted, deleted, inserted
    assert "_deleted" not in tables["a"].columns
    assert DeltaTable(str(tmp_path / "features" / "b")).metadata().configuration["lakehouse_ml.contract.hash"] == "h1"
    with pytest.raises(KeyError, match="feature table 'nope' has not been built"):
        tables["nope"]
    infos = FeatureTableInfoDataset(filepath=template).load()
    assert infos["a"]["version"] == 1 and infos["nope"]["version"] is None
    assert "a" in infos and "nope" not in infos and list(infos) == ["a", "b"]
    with pytest.raises(DatasetError, match="a merge needs the table's keys"):
        dataset.save({"a": {"rows": _rows(spark, [])}})


def test_an_empty_update_leaves_an_existing_work_table_alone(spark, tmp_path):
    staged = FeatureTablesDataset(filepath=str(tmp_path / "staged_{table}"), write_mode="overwrite", skip_empty=True)
    staged.save({"a": {"rows": _rows(spark, [("c1", T1, 1.0, False)])}})
    staged.save({"a": {"rows": _rows(spark, [])}})
    assert staged.load()["a"].count() == 1
    assert DeltaTable(str(tmp_path / "staged_a")).version() == 0
