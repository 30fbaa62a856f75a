"""Where the engines differ (``lakehouse_ml.capabilities``), checked on the engine under test.

The embedded engine runs these by default; ``tests/cluster`` runs this file again against the
local JVM Spark cluster, so every decision is exercised on both engines.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, MapType, StringType

from lakehouse_ml.capabilities import (
    DELTA_EXTENSION,
    JVM_SPARK,
    SAIL,
    check_delta,
    engine_of,
    invalid_column_names,
    is_table_creation,
    json_text,
    portable,
    python_runs_on_executors,
)
from lakehouse_ml.datasets import PandasDeltaDataset, SparkDeltaDataset
from lakehouse_ml.features.expressions_spark import rounded
from lakehouse_ml.lakehouse import table_history
from tests.conftest import REMOTE_ENV

EXPECTED_ENGINE = JVM_SPARK if os.environ.get(REMOTE_ENV) else SAIL


def logged_types(path) -> dict[str, object]:
    """Each column's type exactly as the table's first commit declares it in the Delta log."""
    with open(path / "_delta_log" / "00000000000000000000.json") as log:
        for line in log:
            entry = json.loads(line)
            if "metaData" in entry:
                schema = json.loads(entry["metaData"]["schemaString"])
                return {field["name"]: field["type"] for field in schema["fields"]}
    raise AssertionError(f"no metaData in the first commit of {path}")


def test_engine_of_the_session_under_test(spark):
    assert engine_of(spark) == EXPECTED_ENGINE
    assert python_runs_on_executors(spark) is (EXPECTED_ENGINE == JVM_SPARK)


def test_the_session_under_test_has_delta(spark):
    check_delta(spark, "the test session")


def test_udf_string_results_are_written_as_plain_strings_that_delta_rs_opens(spark, tmp_path):
    """JVM Spark types UDF strings with an explicit collation that delta-rs cannot open."""

    @F.pandas_udf(StringType())
    def shout(values: pd.Series) -> pd.Series:
        return values + "!"

    @F.pandas_udf(MapType(StringType(), StringType()))
    def as_map(values: pd.Series) -> pd.Series:
        return values.map(lambda v: {"k": v})

    @F.udf(ArrayType(StringType()))
    def as_list(value):
        return [value, value]

    frame = spark.createDataFrame([(1, "a"), (2, "b")], "id long, v string").select(
        "id",
        F.struct(shout("v").alias("odd-name"), F.col("id").alias("n")).alias("nested"),
        shout("v").alias("shouted"),
        as_map("v")["k"].alias("from_map"),
        as_map("v").alias("as_map"),
        as_list("v").alias("as_list"),
        F.concat(F.lit("x/"), shout("v")).alias("concatenated"),
    )
    path = tmp_path / "t"
    SparkDeltaDataset(filepath=str(path)).save(frame)

    types = logged_types(path)
    assert types["shouted"] == "string" and types["from_map"] == "string"
    assert types["as_list"]["elementType"] == "string"
    assert types["as_map"]["keyType"] == "string" and types["as_map"]["valueType"] == "string"
    assert [(f["name"], f["type"]) for f in types["nested"]["fields"]] == [("odd-name", "string"), ("n", "long")]
    DeltaTable(str(path)).schema()  # delta-rs refused the collated type here before
    loaded = PandasDeltaDataset(filepath=str(path)).load().sort_values("id")
    assert loaded["shouted"].tolist() == ["a!", "b!"]
    assert loaded["concatenated"].tolist() == ["x/a!", "x/b!"]
    assert [list(v) for v in loaded["as_list"]] == [["a", "a"], ["b", "b"]]


def test_rounded_rounds_alike_on_every_engine_where_round_of_a_double_differs(spark):
    """JVM Spark gave 22.81 for the first value and 1.01 for the second; Sail 22.82 and 1.0."""
    values = [
        22.814999999999998,
        1.005,
        2.675,
        0.125,
        -1.005,
        -0.125,
        1.0049999999,
        1.00499999,
        184.79,
        None,
        math.inf,
        -math.inf,
        1e30,
        math.nan,
    ]
    frame = spark.createDataFrame([(v,) for v in values], "x double")
    got = [row[0] for row in frame.select(rounded(F.col("x"), 2)).collect()]
    assert got[:-1] == [22.82, 1.01, 2.68, 0.13, -1.01, -0.13, 1.01, 1.0, 184.79, None, math.inf, -math.inf, 1e30]
    assert math.isnan(got[-1])  # no decimal holds these: rounded as doubles, never an error
    six = frame.select(rounded(F.col("x") / F.lit(60.0), 6)).collect()
    assert [row[0] for row in six][:2] == [0.38025, 0.01675]


def test_json_text_writes_timestamps_alike_on_every_engine(spark):
    """JVM Spark's to_json cut them to milliseconds; the text is Sail's, so stored hashes stay valid."""
    frame = spark.sql(
        "SELECT TIMESTAMP'2026-03-01 00:00:00.123456' AS ts, TIMESTAMP'2026-03-01 00:00:00' AS t0, "
        "DATE'2026-03-01' AS d, 0.1D + 0.2D AS f, 'x\"y' AS s, 3 AS i, CAST(NULL AS DOUBLE) AS n"
    )
    text = frame.select(json_text(F.struct(*frame.columns))).collect()[0][0]
    assert text == (
        '{"ts":"2026-03-01T00:00:00.123456Z","t0":"2026-03-01T00:00:00.000000Z","d":"2026-03-01",'
        '"f":0.30000000000000004,"s":"x\\"y","i":3}'
    )


def test_portable_leaves_a_frame_without_strings_as_it_is(spark):
    frame = spark.range(3)
    assert portable(frame) is frame


def test_invalid_column_names_are_those_delta_spark_refuses():
    names = ["id", "odd name", "a,b", "c;d", "e{f}", "g(h)", "i\nj", "k\tl", "m=n", "ok-name", "ok.name"]
    assert invalid_column_names(names) == ["odd name", "a,b", "c;d", "e{f}", "g(h)", "i\nj", "k\tl", "m=n"]


def test_the_commit_that_created_a_table_reads_as_creation_on_either_engine(spark, tmp_path):
    path = tmp_path / "t"
    dataset = SparkDeltaDataset(filepath=str(path), write_mode="append")
    dataset.save(spark.range(2))
    dataset.save(spark.range(2, 4))
    history = sorted((h["version"], h["operation"]) for h in table_history(str(path)))
    assert [is_table_creation(version, operation) for version, operation in history] == [True, False]
    assert is_table_creation(3, "CREATE OR REPLACE TABLE") and not is_table_creation(3, "WRITE")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_jvm_spark_without_delta_is_refused_naming_the_extension_and_how_to_add_it(tmp_path):
    """A real JVM Spark started without delta-spark (classic pyspark, in a child process)."""
    script = tmp_path / "child.py"
    script.write_text(
        textwrap.dedent(
            """
        import json
        from pyspark.sql import SparkSession
        from lakehouse_ml.capabilities import EngineCapabilityError, check_delta, engine_of
        spark = (SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false")
                 .config("spark.ui.showConsoleProgress", "false").getOrCreate())
        try:
            check_delta(spark, "sc://example:15002")
            out = {"engine": engine_of(spark), "error": None}
        except EngineCapabilityError as error:
            out = {"engine": engine_of(spark), "error": str(error)}
        spark.stop()
        print(json.dumps(out))
        """
        )
    )
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED")}
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280
    )
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["engine"] == JVM_SPARK
    message = out["error"]
    assert "sc://example:15002" in message and DELTA_EXTENSION in message
    assert "--packages io.delta:delta-spark" in message and "remote.check_delta" in message
