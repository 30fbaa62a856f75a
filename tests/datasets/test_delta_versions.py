"""SparkDeltaVersionsDataset: a Delta table's versions and what its commits since a version did."""

from __future__ import annotations

from pyspark.sql import functions as F

from lakehouse_ml.datasets import SparkDeltaDataset, SparkDeltaVersionsDataset

SCHEMA = "id long, v string, deleted boolean"


def test_only_upserts_since_tells_upsert_merges_from_deletes_and_overwrites(spark, tmp_path):
    path = str(tmp_path / "t")
    merged = SparkDeltaDataset(filepath=path, write_mode="merge", merge_keys=["id"], merge_delete_column="deleted")
    versions = SparkDeltaVersionsDataset(filepath=path, schema_if_missing="id long, v string")
    merged.save(spark.createDataFrame([(1, "a", False), (2, "b", False)], SCHEMA))  # version 0
    merged.save(spark.createDataFrame([(2, "B", False), (3, "c", False)], SCHEMA))  # 1: upsert
    merged.save(spark.createDataFrame([(4, "d", False)], SCHEMA))  # 2: upsert
    appended = SparkDeltaDataset(filepath=path, write_mode="append")
    appended.save(spark.createDataFrame([(5, "e")], "id long, v string"))  # 3: append

    loaded = versions.load()
    assert loaded.version == 3
    assert all(loaded.only_upserts_since(v) for v in range(4))

    merged.save(spark.createDataFrame([(1, "a", True)], SCHEMA))  # 4: a MERGE that deletes
    assert not versions.load().only_upserts_since(3)
    merged.save(spark.createDataFrame([(6, "f", False)], SCHEMA))  # 5: upsert again
    assert versions.load().only_upserts_since(4)

    SparkDeltaDataset(filepath=path).save(spark.createDataFrame([(9, "z")], "id long, v string"))  # 6
    loaded = versions.load()
    assert not loaded.only_upserts_since(5)
    assert sorted(r["id"] for r in loaded.current.collect()) == [9]
    assert sorted(r["id"] for r in loaded.at(5).filter(F.col("id") > 3).collect()) == [4, 5, 6]
