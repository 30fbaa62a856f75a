"""SparkDeltaDataset / PandasDeltaDataset / lakehouse helpers on real Delta tables (embedded Sail).

Every table lives in ``tmp_path``; every expected value is written out by hand. Tests that need a
process of their own (a write killed with SIGKILL, the pandas read's exit code, a different local
time zone) run a small script with ``sys.executable``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable
from kedro.io import DataCatalog
from kedro.io.core import DatasetError
from pyspark.sql import functions as F

from lakehouse_ml.capabilities import is_table_creation
from lakehouse_ml.datasets import PandasDeltaDataset, SparkDeltaDataset
from lakehouse_ml.lakehouse import table_history, table_lineage, table_version
from tests.conftest import REMOTE_ENV

SCHEMA = "id long, v string"
FLAGGED = "id long, v string, deleted boolean"
DAYS = "day string, id long, v long"


# ----------------------------------------------------------------------------------- helpers


def rows(df) -> list[tuple]:
    """The rows of a Spark DataFrame as sorted tuples."""
    return sorted(tuple(r) for r in df.collect())


def pandas_rows(pdf: pd.DataFrame) -> list[tuple]:
    """The rows of a pandas DataFrame as sorted tuples of plain Python values."""
    return sorted(tuple(r) for r in pdf.astype(object).itertuples(index=False, name=None))


def operations(path: Path) -> list[tuple[int, str]]:
    """(version, operation) of every commit, as table_history reports them (newest first).

    The commit that creates a table is named differently by the engines (capabilities
    ``is_table_creation``): it reads "CREATE TABLE" here, so the tests run on either.
    """
    return [
        (h["version"], "CREATE TABLE" if is_table_creation(h["version"], h["operation"]) else h["operation"])
        for h in table_history(str(path))
    ]


def child_env() -> dict[str, str]:
    """The environment for a child process: without the parent's Spark Connect URL."""
    env = dict(os.environ)
    env.pop("SPARK_REMOTE", None)
    return env


def run_script(tmp_path: Path, name: str, code: str, timeout: float = 60, env=None):
    """Write ``code`` to ``tmp_path/name`` and run it with this interpreter, bounded in time."""
    script = tmp_path / name
    script.write_text(textwrap.dedent(code))
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env or child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ------------------------------------------------------------------------ construction checks


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"write_mode": "upsert"}, "write_mode must be one of overwrite, append, merge, replace"),
        ({"write_mode": "merge"}, "write_mode 'merge' needs merge_keys"),
        ({"write_mode": "replace"}, "write_mode 'replace' needs replace_keys"),
        ({"merge_insert_column": "_new"}, "merge_insert_column needs write_mode 'merge', got 'overwrite'"),
        ({"save_args": {"targetFileSize": "32MB"}}, r"targetFileSize must be a positive whole number .* got '32MB'"),
        ({"save_args": {"targetFileSize": 0}}, r"targetFileSize must be a positive whole number .* got 0"),
    ],
)
def test_invalid_configuration_is_rejected_with_the_table_path(tmp_path, kwargs, message):
    path = str(tmp_path / "t")
    with pytest.raises(DatasetError, match=message) as error:
        SparkDeltaDataset(filepath=path, **kwargs)
    assert path in str(error.value)


# --------------------------------------------------------------------------------- overwrite


def test_overwrite_then_load(spark, tmp_path):
    path = tmp_path / "t"
    ds = SparkDeltaDataset(filepath=str(path))
    assert not ds.exists()

    ds.save(spark.createDataFrame([(1, "a"), (2, "b")], SCHEMA))
    assert ds.exists()
    assert ds.load().columns == ["id", "v"]
    assert rows(ds.load()) == [(1, "a"), (2, "b")]
    assert table_version(str(path)) == 0

    ds.save(spark.createDataFrame([(3, "c")], SCHEMA))
    assert rows(ds.load()) == [(3, "c")]
    assert table_version(str(path)) == 1


def test_target_file_size_cuts_the_data_files_on_the_embedded_engine(spark, tmp_path):
    """The ingest tables' ``targetFileSize`` (globals ``delta_target_file_size``) reaches the writer.

    The embedded engine holds each data file in memory until it is written, so the option is what
    bounds a writer's memory; JVM Delta ignores it and writes the same rows.
    """
    path = tmp_path / "t"
    target = 500_000
    # One input partition: without the option, one file whatever the machine's core count.
    frame = spark.range(0, 200_000, 1, 1).select("id", F.sha2(F.col("id").cast("string"), 256).alias("payload"))
    SparkDeltaDataset(filepath=str(path), save_args={"targetFileSize": target}).save(frame)
    loaded = SparkDeltaDataset(filepath=str(path)).load()
    assert loaded.count() == 200_000
    assert loaded.select(F.countDistinct("payload")).first()[0] == 200_000
    if not os.environ.get(REMOTE_ENV):
        sizes = [f.stat().st_size for f in path.glob("*.parquet")]
        assert len(sizes) >= 5, sizes
        assert max(sizes) < 4 * target, sizes


def test_relative_filepath_is_resolved_against_the_working_directory(spark, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ds = SparkDeltaDataset(filepath="data/rel")
    ds.save(spark.createDataFrame([(1, "a")], SCHEMA))
    assert DeltaTable.is_deltatable(str(tmp_path / "data" / "rel"))
    assert rows(ds.load()) == [(1, "a")]


# ------------------------------------------------------------------------------------ append


def test_append_adds_rows_and_a_version(spark, tmp_path):
    path = tmp_path / "t"
    SparkDeltaDataset(filepath=str(path)).save(spark.createDataFrame([(1, "a"), (2, "b")], SCHEMA))
    ds = SparkDeltaDataset(filepath=str(path), write_mode="append")

    ds.save(spark.createDataFrame([(3, "c"), (1, "a")], SCHEMA))

    assert rows(ds.load()) == [(1, "a"), (1, "a"), (2, "b"), (3, "c")]
    assert table_version(str(path)) == 1
    assert table_history(str(path))[0]["operationParameters"]["mode"] == "Append"


# ------------------------------------------------------------------------------------- merge


def test_merge_updates_matched_keys_and_inserts_new_ones(spark, tmp_path):
    path = tmp_path / "t"
    schema = "k1 long, k2 string, n long, v string"
    SparkDeltaDataset(filepath=str(path)).save(
        spark.createDataFrame([(1, "x", 10, "a"), (1, "y", 20, "b"), (2, "x", 30, "c")], schema)
    )
    ds = SparkDeltaDataset(filepath=str(path), write_mode="merge", merge_keys=["k1", "k2"])

    # (1, y) exists -> updated in full; (2, y) is new -> inserted; (1, x), (2, x) untouched.
    ds.save(spark.createDataFrame([(1, "y", 21, "B"), (2, "y", 40, "d")], schema))

    assert rows(ds.load()) == [
        (1, "x", 10, "a"),
        (1, "y", 21, "B"),
        (2, "x", 30, "c"),
        (2, "y", 40, "d"),
    ]
    assert operations(path) == [(1, "MERGE"), (0, "CREATE TABLE")]


def test_merge_delete_column_on_first_write_drops_flagged_rows_and_the_flag(spark, tmp_path):
    path = tmp_path / "t"
    ds = SparkDeltaDataset(filepath=str(path), write_mode="merge", merge_keys=["id"], merge_delete_column="deleted")

    ds.save(spark.createDataFrame([(1, "a", False), (2, "b", True), (3, "c", False)], FLAGGED))

    loaded = ds.load()
    assert loaded.columns == ["id", "v"]
    assert rows(loaded) == [(1, "a"), (3, "c")]
    assert table_version(str(path)) == 0


def test_merge_delete_column_deletes_flagged_keys(spark, tmp_path):
    path = tmp_path / "t"
    ds = SparkDeltaDataset(filepath=str(path), write_mode="merge", merge_keys=["id"], merge_delete_column="deleted")
    ds.save(spark.createDataFrame([(1, "a", False), (2, "b", False), (3, "c", False)], FLAGGED))

    # 1: update; 2: absent from the source -> kept; 3: flagged -> deleted; 4: new -> inserted;
    # 5: flagged but absent from the table -> not inserted.
    ds.save(spark.createDataFrame([(1, "A", False), (3, "c", True), (4, "d", False), (5, "e", True)], FLAGGED))

    loaded = ds.load()
    assert loaded.columns == ["id", "v"]
    assert rows(loaded) == [(1, "A"), (2, "b"), (4, "d")]
    assert table_version(str(path)) == 1


def test_merge_insert_column_appends_flagged_rows_and_merges_only_the_others(spark, tmp_path):
    path = tmp_path / "t"
    schema = "id long, v string, new boolean"
    ds = SparkDeltaDataset(filepath=str(path), write_mode="merge", merge_keys=["id"], merge_insert_column="new")
    ds.save(spark.createDataFrame([], schema))  # creates the table, empty
    assert ds.load().columns == ["id", "v"]
    ds.save(spark.createDataFrame([(1, "a", True), (2, "b", True)], schema))  # an empty table is overwritten
    assert ds.load().columns == ["id", "v"]

    # 3 and 4 are appended, 2 is updated by the MERGE of its row alone.
    ds.save(spark.createDataFrame([(2, "B", False), (3, "c", True), (4, "d", True)], schema))
    assert rows(ds.load()) == [(1, "a"), (2, "B"), (3, "c"), (4, "d")]
    last, before = table_history(str(path))[:2]
    assert (before["operation"], before["operationParameters"]["mode"]) == ("WRITE", "Append")
    # int(): JVM Delta records metrics as strings.
    assert (last["operation"], int(last["operationMetrics"]["numSourceRows"])) == ("MERGE", 1)

    # Only new rows: one append, no MERGE. None flagged: a MERGE alone, which finds existing keys.
    ds.save(spark.createDataFrame([(5, "e", True)], schema))
    ds.save(spark.createDataFrame([(5, "E", False), (6, "f", None)], schema))
    assert [h["operation"] for h in table_history(str(path))[:2]] == ["MERGE", "WRITE"]
    assert rows(ds.load())[-2:] == [(5, "E"), (6, "f")]


def test_merge_source_with_duplicate_keys_raises_naming_the_keys(spark, tmp_path):
    path = tmp_path / "t"
    SparkDeltaDataset(filepath=str(path)).save(spark.createDataFrame([(1, "a")], SCHEMA))
    ds = SparkDeltaDataset(filepath=str(path), write_mode="merge", merge_keys=["id"])

    source = spark.createDataFrame([(1, "x"), (1, "y"), (2, "z"), (2, "w"), (2, "q"), (3, "ok")], SCHEMA)
    with pytest.raises(DatasetError) as error:
        ds.save(source)

    message = str(error.value)
    assert "several rows per key ['id']" in message
    assert "id=1 (2 rows)" in message
    assert "id=2 (3 rows)" in message
    assert "id=3" not in message
    assert table_version(str(path)) == 0
    assert rows(ds.load()) == [(1, "a")]


# ----------------------------------------------------------------------------------- replace


def test_replace_replaces_only_rows_whose_keys_occur_in_the_new_data(spark, tmp_path):
    path = tmp_path / "t"
    SparkDeltaDataset(filepath=str(path)).save(
        spark.createDataFrame([("d1", 1, 10), ("d1", 2, 20), ("d2", 1, 30), ("d3", 1, 40), ("d3", 2, 41)], DAYS)
    )
    ds = SparkDeltaDataset(filepath=str(path), write_mode="replace", replace_keys=["day"])

    # d1 and d3 are replaced as a whole (even d3's id=2, absent from the new data), d2 is kept,
    # d4 is new.
    ds.save(spark.createDataFrame([("d1", 9, 99), ("d3", 7, 77), ("d4", 1, 50)], DAYS))

    assert rows(ds.load()) == [("d1", 9, 99), ("d2", 1, 30), ("d3", 7, 77), ("d4", 1, 50)]
    last = table_history(str(path))[0]
    assert (last["version"], last["operation"]) == (1, "WRITE")
    # The replaceWhere predicate lists exactly the key values of the new data (in any order).
    assert last["operationParameters"]["predicate"] == (
        "(`day` IN (CAST('d1' AS string), CAST('d3' AS string), CAST('d4' AS string)))"
    )


def test_replace_with_delete_markers_empties_their_keys_and_never_writes_them(spark, tmp_path):
    path = tmp_path / "t"
    schema = "day string, id long, v long, gone boolean"
    ds = SparkDeltaDataset(filepath=str(path), write_mode="replace", replace_keys=["day"], merge_delete_column="gone")
    # A first write creates the table without the markers or their column.
    ds.save(spark.createDataFrame([("d1", 1, 10, False), ("d2", 1, 20, False), ("d3", 1, 30, True)], schema))
    assert ds.load().columns == ["day", "id", "v"]
    assert rows(ds.load()) == [("d1", 1, 10), ("d2", 1, 20)]

    # d1 is replaced by its new row; d2 has only a marker, so it is emptied; d4's marker names no row.
    ds.save(
        spark.createDataFrame(
            [("d1", 2, 11, False), ("d1", None, None, True), ("d2", None, None, True), ("d4", None, None, True)], schema
        )
    )
    assert rows(ds.load()) == [("d1", 2, 11)]

    # Markers alone still empty their keys (nothing else is written).
    ds.save(spark.createDataFrame([("d1", None, None, True)], schema))
    assert ds.load().count() == 0


def test_replace_on_two_keys_and_a_date(spark, tmp_path):
    path = tmp_path / "t"
    SparkDeltaDataset(filepath=str(path)).save(
        spark.sql(
            "SELECT * FROM VALUES (DATE'2024-01-01', 'a', 1L), (DATE'2024-01-01', 'b', 2L), "
            "(DATE'2024-01-02', 'a', 3L) AS t(d, src, n)"
        )
    )
    ds = SparkDeltaDataset(filepath=str(path), write_mode="replace", replace_keys=["d", "src"])

    ds.save(spark.sql("SELECT DATE'2024-01-01' AS d, 'a' AS src, 10L AS n"))

    got = [(str(d), s, n) for d, s, n in rows(ds.load().select("d", "src", "n"))]
    assert got == [("2024-01-01", "a", 10), ("2024-01-01", "b", 2), ("2024-01-02", "a", 3)]
    assert ds.load().dtypes == [("d", "date"), ("src", "string"), ("n", "bigint")]


def test_replace_with_a_null_key_raises_and_keeps_the_table(spark, tmp_path):
    path = tmp_path / "t"
    SparkDeltaDataset(filepath=str(path)).save(spark.createDataFrame([("d1", 1, 10)], DAYS))
    ds = SparkDeltaDataset(filepath=str(path), write_mode="replace", replace_keys=["day"])

    with pytest.raises(DatasetError, match=r"replace_keys \['day'\] must not contain nulls"):
        ds.save(spark.createDataFrame([(None, 2, 20)], DAYS))
    assert table_version(str(path)) == 0
    assert rows(ds.load()) == [("d1", 1, 10)]


# ------------------------------------------------------------------------------ empty frames


@pytest.mark.parametrize(
    "kwargs",
    [
        {"write_mode": "append"},
        {"write_mode": "merge", "merge_keys": ["id"]},
        {"write_mode": "replace", "replace_keys": ["day"]},
    ],
    ids=["append", "merge", "replace"],
)
def test_empty_save_onto_an_existing_table_adds_no_version(spark, tmp_path, kwargs):
    path = tmp_path / "t"
    SparkDeltaDataset(filepath=str(path)).save(spark.createDataFrame([("d1", 1, 10)], DAYS))
    ds = SparkDeltaDataset(filepath=str(path), **kwargs)

    ds.save(spark.createDataFrame([], DAYS))
    ds.save(spark.createDataFrame([("d1", 1, 10)], DAYS).filter(F.col("id") > 5))

    assert DeltaTable(str(path)).version() == 0
    assert rows(ds.load()) == [("d1", 1, 10)]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"write_mode": "overwrite"},
        {"write_mode": "append"},
        {"write_mode": "merge", "merge_keys": ["id"]},
        {"write_mode": "replace", "replace_keys": ["day"]},
    ],
    ids=["overwrite", "append", "merge", "replace"],
)
def test_first_save_of_an_empty_frame_creates_the_table_with_its_schema(spark, tmp_path, kwargs):
    path = tmp_path / "t"
    ds = SparkDeltaDataset(filepath=str(path), **kwargs)

    ds.save(spark.createDataFrame([], DAYS))

    assert DeltaTable(str(path)).version() == 0
    assert [(f.name, f.type.type) for f in DeltaTable(str(path)).schema().fields] == [
        ("day", "string"),
        ("id", "long"),
        ("v", "long"),
    ]
    loaded = ds.load()
    assert loaded.dtypes == [("day", "string"), ("id", "bigint"), ("v", "bigint")]
    assert loaded.count() == 0


# ----------------------------------------------------------------------------------- rebuild


def test_rebuild_overwrites_once_even_in_merge_mode(spark, tmp_path):
    path = tmp_path / "t"
    SparkDeltaDataset(filepath=str(path)).save(spark.createDataFrame([(1, "a"), (2, "b")], SCHEMA))
    ds = SparkDeltaDataset(filepath=str(path), write_mode="merge", merge_keys=["id"], rebuild=True)

    ds.save(spark.createDataFrame([(3, "c")], SCHEMA))
    assert rows(ds.load()) == [(3, "c")]  # overwritten: 1 and 2 are gone

    ds.save(spark.createDataFrame([(1, "z"), (3, "C")], SCHEMA))
    assert rows(ds.load()) == [(1, "z"), (3, "C")]  # merged: the rebuild happened once

    assert operations(path) == [(2, "MERGE"), (1, "WRITE"), (0, "CREATE TABLE")]
    assert table_history(str(path))[1]["operationParameters"]["mode"] == "Overwrite"


@pytest.mark.parametrize(("flag", "expected"), [("true", [(9, "n")]), ("false", [(1, "a"), (9, "n")])])
def test_rebuild_given_as_a_runtime_param_string(spark, tmp_path, flag, expected):
    path = tmp_path / "t"
    SparkDeltaDataset(filepath=str(path)).save(spark.createDataFrame([(1, "a")], SCHEMA))
    ds = SparkDeltaDataset(filepath=str(path), write_mode="append", rebuild=flag)

    ds.save(spark.createDataFrame([(9, "n")], SCHEMA))

    assert rows(ds.load()) == expected


def test_rebuild_with_a_delete_column_drops_flagged_rows(spark, tmp_path):
    path = tmp_path / "t"
    SparkDeltaDataset(filepath=str(path)).save(spark.createDataFrame([(1, "a")], SCHEMA))
    ds = SparkDeltaDataset(
        filepath=str(path),
        write_mode="merge",
        merge_keys=["id"],
        merge_delete_column="deleted",
        rebuild=True,
    )

    ds.save(spark.createDataFrame([(2, "b", False), (3, "c", True)], FLAGGED))

    assert ds.load().columns == ["id", "v"]
    assert rows(ds.load()) == [(2, "b")]


# ------------------------------------------------------------------------- missing tables


def test_schema_if_missing_loads_an_empty_frame_of_that_schema(spark, tmp_path):
    ds = SparkDeltaDataset(filepath=str(tmp_path / "never_written"), schema_if_missing="a long, b string")

    loaded = ds.load()

    assert loaded.dtypes == [("a", "bigint"), ("b", "string")]
    assert loaded.count() == 0
    assert not ds.exists()
    assert not (tmp_path / "never_written").exists()


def test_missing_table_without_schema_raises_naming_the_path(spark, tmp_path):
    path = str(tmp_path / "never_written")
    ds = SparkDeltaDataset(filepath=path)

    with pytest.raises(DatasetError) as error:
        ds.load()

    assert path in str(error.value)
    assert "does not exist yet" in str(error.value)
    with pytest.raises(DatasetError, match="does not exist yet"):
        PandasDeltaDataset(filepath=path).load()


def test_a_folder_without_a_delta_log_is_a_missing_table(spark, tmp_path):
    path = tmp_path / "not_delta"
    path.mkdir()
    (path / "stray.txt").write_text("x")
    ds = SparkDeltaDataset(filepath=str(path), schema_if_missing="a long")

    assert not ds.exists()
    assert ds.load().count() == 0


# -------------------------------------------------------------- time travel and the Delta log


def test_time_travel_with_version_as_of(spark, tmp_path):
    path = tmp_path / "t"
    SparkDeltaDataset(filepath=str(path)).save(spark.createDataFrame([(1, "a")], SCHEMA))
    SparkDeltaDataset(filepath=str(path), write_mode="append").save(spark.createDataFrame([(2, "b")], SCHEMA))
    SparkDeltaDataset(filepath=str(path)).save(spark.createDataFrame([(9, "z")], SCHEMA))

    def at(version):
        return rows(SparkDeltaDataset(filepath=str(path), load_args={"versionAsOf": version}).load())

    assert at(0) == [(1, "a")]
    assert at(1) == [(1, "a"), (2, "b")]
    assert at(2) == [(9, "z")]
    assert rows(SparkDeltaDataset(filepath=str(path)).load()) == [(9, "z")]


def test_table_version_history_and_lineage(spark, tmp_path):
    path = tmp_path / "t"
    assert table_version(str(path)) is None

    SparkDeltaDataset(filepath=str(path)).save(spark.createDataFrame([(1, "a")], SCHEMA))
    SparkDeltaDataset(filepath=str(path), write_mode="append").save(spark.createDataFrame([(2, "b")], SCHEMA))
    SparkDeltaDataset(filepath=str(path), write_mode="merge", merge_keys=["id"]).save(
        spark.createDataFrame([(2, "B")], SCHEMA)
    )

    assert table_version(str(path)) == 2
    assert operations(path) == [(2, "MERGE"), (1, "WRITE"), (0, "CREATE TABLE")]
    history = table_history(str(path))
    assert history[0]["timestamp"] >= history[1]["timestamp"] >= history[2]["timestamp"]
    assert [h["version"] for h in table_history(str(path), limit=1)] == [2]

    lineage = table_lineage("t", str(path))
    assert lineage == {
        "table": "t",
        "path": path.resolve().as_posix(),
        "version": 2,
        "operation": "MERGE",
        "timestamp": history[0]["timestamp"],
    }


# ------------------------------------------------------------------------------------ pandas


def test_pandas_dataset_reads_the_same_rows_and_a_given_version(spark, tmp_path):
    path = tmp_path / "t"
    SparkDeltaDataset(filepath=str(path)).save(spark.createDataFrame([(1, "a"), (2, "b")], SCHEMA))
    SparkDeltaDataset(filepath=str(path), write_mode="merge", merge_keys=["id"]).save(
        spark.createDataFrame([(2, "B"), (3, "c")], SCHEMA)
    )

    current = PandasDeltaDataset(filepath=str(path)).load()
    assert list(current.columns) == ["id", "v"]
    assert pandas_rows(current) == [(1, "a"), (2, "B"), (3, "c")]
    assert pandas_rows(current) == rows(SparkDeltaDataset(filepath=str(path)).load())

    assert pandas_rows(PandasDeltaDataset(filepath=str(path), version=0).load()) == [(1, "a"), (2, "b")]
    only_v = PandasDeltaDataset(filepath=str(path), columns=["v"]).load()
    assert sorted(only_v["v"]) == ["B", "a", "c"]


def test_pandas_dataset_reads_nested_strings_timestamps_and_column_subsets(spark, tmp_path):
    """Types as the table declares them (no Arrow view types: pandas cannot convert those in lists)."""
    path = tmp_path / "t"
    SparkDeltaDataset(filepath=str(path)).save(
        spark.sql(
            "SELECT 1 AS id, array('a: expected x', 'b') AS checks, TIMESTAMP '2026-01-02 03:04:05' AS ts, "
            "CAST(NULL AS DOUBLE) AS `odd-name`"
        )
    )
    frame = PandasDeltaDataset(filepath=str(path)).load()
    assert list(frame["checks"][0]) == ["a: expected x", "b"]
    assert str(frame["ts"].dtype).startswith("datetime64") and frame["ts"][0].year == 2026
    assert frame["odd-name"].isna().all() and frame["odd-name"].dtype == "float64"
    subset = PandasDeltaDataset(filepath=str(path), columns=["odd-name", "checks"]).load()
    assert list(subset.columns) == ["odd-name", "checks"]


def test_spark_dataset_refuses_column_names_delta_spark_refuses_on_every_engine(spark, tmp_path):
    """A table written on one engine must open on the other: names JVM Spark refuses are refused here."""
    path = tmp_path / "t"
    with pytest.raises(DatasetError) as error:
        SparkDeltaDataset(filepath=str(path)).save(spark.sql("SELECT 1 AS id, 2 AS `odd name`, 3 AS `a=b`"))
    message = str(error.value)
    assert "['odd name', 'a=b']" in message and str(path) in message and "withColumnRenamed" in message
    assert not path.exists()


def test_pandas_dataset_save_is_readable_through_spark(spark, tmp_path):
    path = tmp_path / "t"
    ds = PandasDeltaDataset(filepath=str(path))
    ds.save(pd.DataFrame({"id": [1, 2], "v": ["a", "b"]}))
    ds.save(pd.DataFrame({"id": [3], "v": ["c"]}))  # default mode: overwrite

    assert rows(SparkDeltaDataset(filepath=str(path)).load()) == [(3, "c")]
    assert table_version(str(path)) == 1


def test_transcoding_through_a_kedro_catalog(spark, tmp_path):
    path = (tmp_path / "t").as_posix()
    catalog = DataCatalog.from_config(
        {
            "t@spark": {
                "type": "lakehouse_ml.datasets.SparkDeltaDataset",
                "filepath": path,
                "write_mode": "merge",
                "merge_keys": ["id"],
            },
            "t@pandas": {"type": "lakehouse_ml.datasets.PandasDeltaDataset", "filepath": path},
        }
    )

    catalog.save("t@spark", spark.createDataFrame([(1, "a"), (2, "b")], SCHEMA))
    catalog.save("t@spark", spark.createDataFrame([(2, "B"), (3, "c")], SCHEMA))

    loaded = catalog.load("t@pandas")
    expected = pd.DataFrame({"id": [1, 2, 3], "v": ["a", "B", "c"]})
    pd.testing.assert_frame_equal(loaded.sort_values("id").reset_index(drop=True), expected, check_dtype=False)
    assert loaded["id"].dtype == "int64"
    assert pandas_rows(loaded) == rows(catalog.load("t@spark"))


# --------------------------------------------------------------------- failures mid-write

WIDE_COLUMNS = 16


def wide(frame):
    """``id`` plus WIDE_COLUMNS deterministic pseudo-random columns (rand() is broken on Sail)."""
    return frame.select("id", *[(F.xxhash64("id", F.lit(i)) % 1000).alias(f"c{i}") for i in range(WIDE_COLUMNS)])


def data_files(path: Path) -> set[str]:
    """Every file in the table folder outside ``_delta_log`` (including in-progress uploads)."""
    return {p.name for p in path.iterdir() if p.is_file()}


def log_files(path: Path) -> set[str]:
    return {p.name for p in (path / "_delta_log").iterdir() if p.suffix == ".json"}


def committed_files(path: Path) -> set[str]:
    return {Path(uri).name for uri in DeltaTable(str(path)).file_uris()}


CRASH_CHILD = """
    import sys, time

    import pandas as pd
    from pyspark.sql import functions as F

    from lakehouse_ml.datasets import SparkDeltaDataset
    from lakehouse_ml.engine import ENGINE, EngineConfig

    path, mode = sys.argv[1], sys.argv[2]
    spark = ENGINE.start(EngineConfig())

    @F.pandas_udf("long")
    def slow(ids: pd.Series) -> pd.Series:
        time.sleep(len(ids) * 5e-5)  # ~1 s per 20,000-row partition
        return ids

    # 16 partitions x 20,000 rows x 17 columns; each partition becomes one part file as it
    # finishes, two at a time on this machine, so the whole write takes ~8 s and the first
    # part files exist long before the commit.
    frame = spark.range(1_000, 1_000 + 16 * 20_000, 1, 16)
    frame = frame.select(
        slow("id").alias("id"),
        *[(F.xxhash64("id", F.lit(i)) % 1000).alias(f"c{i}") for i in range(16)],
    )
    print("WRITING", flush=True)
    SparkDeltaDataset(filepath=path, write_mode=mode).save(frame)
    print("DONE", flush=True)
    ENGINE.stop()
"""


@pytest.mark.slow  # a writer process killed mid-write
@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["append", "overwrite"])
def test_write_killed_with_sigkill_leaves_the_table_unchanged(spark, tmp_path, mode):
    path = tmp_path / "t"
    ds = SparkDeltaDataset(filepath=str(path), write_mode="append")
    ds.save(wide(spark.range(0, 50, 1, 2)))
    before = sorted(tuple(r) for r in ds.load().collect())
    assert len(before) == 50 and table_version(str(path)) == 0
    files_before = data_files(path)
    logs_before = log_files(path)

    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(CRASH_CHILD))
    out, err = tmp_path / "writer.out", tmp_path / "writer.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        child = subprocess.Popen(
            [sys.executable, str(script), str(path), mode],
            cwd=tmp_path,
            env=child_env(),
            stdout=stdout,
            stderr=stderr,
        )
        try:
            deadline = time.monotonic() + 60
            written: set[str] = set()
            while time.monotonic() < deadline:
                written = {n for n in data_files(path) - files_before if n.endswith(".parquet")}
                if written or child.poll() is not None:
                    break
                time.sleep(0.02)
            committed_meanwhile = log_files(path) - logs_before
            child.send_signal(signal.SIGKILL)
            returncode = child.wait(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=30)

    child_output = out.read_text()
    assert written, (
        f"no part file appeared before the child ended (rc={child.returncode}):\n"
        f"{child_output}\n{err.read_text()[-3000:]}"
    )
    assert not committed_meanwhile, "the write committed before it could be killed"
    assert returncode == -signal.SIGKILL
    assert "WRITING" in child_output and "DONE" not in child_output

    # Part files of the killed write are on disk but not in the table.
    orphans = data_files(path) - files_before
    assert orphans and not (orphans & committed_files(path))
    assert log_files(path) == logs_before
    assert table_version(str(path)) == 0
    assert sorted(tuple(r) for r in ds.load().collect()) == before
    assert pandas_rows(PandasDeltaDataset(filepath=str(path)).load()) == before

    # The table still takes writes, in both Spark and delta-rs.
    ds.save(wide(spark.range(100, 103)))
    assert table_version(str(path)) == 1
    assert sorted(r.id for r in ds.load().select("id").collect()) == [*list(range(50)), 100, 101, 102]
    assert len(PandasDeltaDataset(filepath=str(path)).load()) == 53


@pytest.mark.parametrize(
    "kwargs",
    [
        {"write_mode": "append"},
        {"write_mode": "overwrite"},
        {"write_mode": "merge", "merge_keys": ["id"]},
        {"write_mode": "replace", "replace_keys": ["batch"]},
    ],
    ids=["append", "overwrite", "merge", "replace"],
)
def test_write_failing_midway_by_exception_leaves_the_table_unchanged(spark, tmp_path, kwargs):
    path = tmp_path / "t"

    def batched(frame):
        return wide(frame).withColumn("batch", F.col("id") % 4)

    SparkDeltaDataset(filepath=str(path)).save(batched(spark.range(0, 20)))
    before = rows(SparkDeltaDataset(filepath=str(path)).load())
    files_before = data_files(path)

    @F.pandas_udf("long")
    def fail_on_3500(ids: pd.Series) -> pd.Series:
        if (ids == 3_500).any():
            time.sleep(0.5)  # let the other partitions write their part files first
            raise ValueError("poisoned row 3500")
        return ids

    # 4 partitions of 1,000 rows; the one holding 3500 fails while others may be written.
    source = batched(spark.range(0, 4_000, 1, 4)).withColumn("id", fail_on_3500("id"))
    ds = SparkDeltaDataset(filepath=str(path), **kwargs)
    with pytest.raises(DatasetError) as error:
        ds.save(source)

    assert "poisoned row 3500" in str(error.value) or "poisoned row 3500" in repr(error.value.__cause__)
    assert table_version(str(path)) == 0
    assert rows(SparkDeltaDataset(filepath=str(path)).load()) == before
    if kwargs["write_mode"] in ("append", "overwrite"):
        # The failure came mid-write: part files of the healthy partitions were written, and
        # none of them made it into the table.
        orphans = data_files(path) - files_before
        assert orphans and not (orphans & committed_files(path))


# ---------------------------------------------------------------- pandas reads in a process


@pytest.mark.slow  # six reader processes, two at a time
def test_pandas_read_of_a_multi_file_table_exits_cleanly(spark, tmp_path):
    path = tmp_path / "multi"
    ds = SparkDeltaDataset(filepath=str(path), write_mode="append")
    ds.save(wide(spark.range(0, 40_000, 1, 8)))
    for start in (40_000, 40_100, 40_200):
        ds.save(wide(spark.range(start, start + 100, 1, 2)))
    assert len(committed_files(path)) >= 10

    script = tmp_path / "reader.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from lakehouse_ml.datasets import PandasDeltaDataset
            df = PandasDeltaDataset(filepath={str(path)!r}).load()
            first = PandasDeltaDataset(filepath={str(path)!r}, version=0).load()
            print(len(df), int(df["id"].sum()), len(first))
            """
        )
    )
    # The abort at exit was intermittent (8/11 runs): run several readers, two at a time.
    results = []
    for _ in range(3):
        pair = [
            subprocess.Popen(
                [sys.executable, str(script)],
                cwd=tmp_path,
                env=child_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        for reader in pair:
            stdout, stderr = reader.communicate(timeout=60)
            results.append((reader.returncode, stdout.strip(), stderr[-2000:]))

    expected_sum = (
        sum(range(40_000)) + sum(range(40_000, 40_100)) + sum(range(40_100, 40_200)) + sum(range(40_200, 40_300))
    )
    for returncode, stdout, stderr in results:
        assert returncode == 0, f"reader exited with {returncode}:\n{stderr}"
        assert stdout == f"40300 {expected_sum} 40000"


# ----------------------------------------------------------------- replace and time zones


@pytest.mark.slow  # an engine in a child process with another TZ
def test_replace_on_a_timestamp_key_outside_utc(tmp_path):
    code = f"""
        import json
        from lakehouse_ml.datasets import SparkDeltaDataset
        from lakehouse_ml.engine import ENGINE, EngineConfig

        spark = ENGINE.start(EngineConfig(spark_conf={{"spark.sql.session.timeZone": "UTC"}}))
        ds = SparkDeltaDataset(filepath={str(tmp_path / "t")!r}, write_mode="replace", replace_keys=["ts"])
        ds.save(spark.sql("SELECT TIMESTAMP'2024-01-01 10:00:00' AS ts, 1 AS v "
                          "UNION ALL SELECT TIMESTAMP'2024-01-02 10:00:00', 2"))
        ds.save(spark.sql("SELECT TIMESTAMP'2024-01-01 10:00:00' AS ts, 9 AS v"))
        print(json.dumps(sorted(r.v for r in ds.load().collect())))
        ENGINE.stop()
    """
    env = {**child_env(), "TZ": "America/New_York"}
    result = run_script(tmp_path, "tz.py", code, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [2, 9]


@pytest.mark.slow  # an engine in a child process
def test_replace_with_many_distinct_key_values(tmp_path):
    code = f"""
        from lakehouse_ml.datasets import SparkDeltaDataset
        from lakehouse_ml.engine import ENGINE, EngineConfig
        from lakehouse_ml.lakehouse import table_version

        spark = ENGINE.start(EngineConfig())
        ds = SparkDeltaDataset(filepath={str(tmp_path / "t")!r}, write_mode="replace", replace_keys=["k"])
        ds.save(spark.range(0, 10).withColumnRenamed("id", "k"))
        # e.g. a backfill of two years of activity_date values in one save
        ds.save(spark.range(5, 735).withColumnRenamed("id", "k"))
        print(table_version({str(tmp_path / "t")!r}), ds.load().count())
        ENGINE.stop()
    """
    result = run_script(tmp_path, "many_keys.py", code)
    assert result.returncode == 0, f"exit code {result.returncode}"
    # keys 0..4 kept, 5..734 replaced by one row each: 5 + 730 rows in version 1
    assert result.stdout.strip().splitlines()[-1] == "1 735"


# ----------------------------------------------------------------------------------- kedro-viz preview


def test_preview_reads_the_first_rows_without_spark(tmp_path, monkeypatch):
    """kedro-viz's table preview: columns, index and rows as plain values, read by delta-rs alone."""
    from deltalake import write_deltalake

    from lakehouse_ml.datasets import PandasFrameDeltaDataset

    def no_spark():
        raise AssertionError("a preview must not start Spark")

    monkeypatch.setattr("lakehouse_ml.datasets.delta.get_spark", no_spark)
    monkeypatch.setattr("lakehouse_ml.datasets.frames.get_spark", no_spark)
    path = str(tmp_path / "t")
    first = pd.DataFrame(
        {
            "id": [1, 2, 3],
            "v": ["a", "b", None],
            "flags": [["x"], [], ["y", "z"]],
            "ts": pd.to_datetime(["2026-01-01 10:00", "2026-01-02 11:00", "2026-01-03 12:00"], utc=True),
        }
    )
    write_deltalake(path, first)
    write_deltalake(path, first.assign(id=[4, 5, 6]), mode="append")

    preview = SparkDeltaDataset(filepath=path).preview(nrows=2)
    assert preview["columns"] == ["id", "v", "flags", "ts"] and preview["index"] == [0, 1]
    assert len(preview["data"]) == 2
    written = {
        (1, "a", ("x",)),
        (2, "b", ()),
        (3, None, ("y", "z")),
        (4, "a", ("x",)),
        (5, "b", ()),
        (6, None, ("y", "z")),
    }
    assert {(r[0], r[1], tuple(r[2])) for r in preview["data"]} <= written
    json.dumps(preview, default=str)  # what kedro-viz sends

    old = PandasDeltaDataset(filepath=path, version=0, columns=["v", "id"]).preview(nrows=10)
    assert old["columns"] == ["v", "id"] and sorted(old["data"], key=lambda r: r[1]) == [["a", 1], ["b", 2], [None, 3]]
    assert len(PandasFrameDeltaDataset(filepath=path, schema="id long").preview()["data"]) == 5

    # kedro-viz picks the preview's kind from the return annotation's name.
    import inspect

    assert "TablePreview" in str(inspect.signature(SparkDeltaDataset.preview).return_annotation)


def test_preview_of_a_missing_table_raises_naming_the_path(tmp_path):
    with pytest.raises(DatasetError, match="does not exist yet"):
        PandasDeltaDataset(filepath=str(tmp_path / "absent")).preview()
