"""Where the engines differ, decided in one place.

The project runs on two engines behind the same PySpark API: Sail (pysail, the embedded default)
and JVM Apache Spark with delta-spark (classic mode, or a cluster over Spark Connect). Each
difference found between them is decided here, listed in docs/pages/cluster.md ("Where the engines
differ, and what the code does about it") and tested on both (``tests/test_capabilities.py``, which ``tests/cluster`` runs again
against the local cluster):

- **Delta support.** Sail reads and writes Delta natively; JVM Spark needs delta-spark's session
  extension, so a server without it is refused at start (``check_delta``).
- **Column names.** delta-spark refuses `` ,;{}()\\n\\t=`` in column names unless column mapping is
  on; Sail accepts them. Tables written on one engine must open on the other, so
  ``SparkDeltaDataset`` refuses such names on both (``invalid_column_names``; top-level names).
- **String types of UDF results.** JVM Spark types a Python UDF's string result (over Spark
  Connect) with an explicit ``UTF8_BINARY`` collation and delta-spark writes it into the table's
  schema as ``string collate UTF8_BINARY``, a type delta-rs (``deltalake``) cannot open. Frames are
  cast back to plain strings before every Delta write (``portable``).
- **Commit names.** delta-spark names the commit that creates a table by a DataFrame write
  ``WRITE``; Sail names it ``CREATE TABLE`` (``is_table_creation``).
- **Rounding a double.** ``round(x, d)`` of a double differs: JVM Spark rounds the double's
  shortest decimal text (``1.005`` to 1.01, but ``22.814999999999998`` to 22.81), Sail a scaled
  binary value (``1.005`` to 1.0, ``22.814999999999998`` to 22.82). Both agree on decimals, so
  values are reduced to 9 decimals first and rounded half away from zero (``rounded``); the
  online Arrow backend does the same (``features/expressions_arrow.py``).
- **JSON of timestamps.** ``to_json`` writes timestamps with microseconds on Sail
  (``…00.123456Z``) and with milliseconds on JVM Spark (``…00.123Z``), so the same row hashed or
  logged as JSON differed (``json_text`` sets the format; Sail's text is unchanged, so hashes
  stored before stay valid). Not decided: doubles outside [1e-3, 1e7) print as ``1.0E21`` on JVM
  Spark and ``1e+21`` on Sail.
- **Where Python runs.** Sail runs Python UDFs as threads of the server process; JVM Spark runs
  them in Python workers of its executors, so only there does work shipped in ``mapInPandas``
  spread over machines (``python_runs_on_executors``).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DataType, MapType, StringType, StructType

SAIL = "sail"
JVM_SPARK = "spark"

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"

INVALID_COLUMN_CHARACTERS = " ,;{}()\n\t="

TABLE_CREATION_OPERATIONS = frozenset({"CREATE TABLE", "CREATE OR REPLACE TABLE", "REPLACE TABLE"})


class EngineCapabilityError(RuntimeError):
    """The engine behind the session lacks something the project needs."""


def engine_of(spark: SparkSession) -> str:
    """Return ``"spark"`` for JVM Apache Spark (classic or a Connect server), ``"sail"`` otherwise.

    JVM Spark always has a ``spark.master``; Sail has no master and answers ``None`` for it.
    """
    return JVM_SPARK if spark.conf.get("spark.master", None) else SAIL


def check_delta(spark: SparkSession, where: str) -> None:
    """Refuse a JVM Spark session without delta-spark's extension, saying how to add it."""
    if engine_of(spark) != JVM_SPARK:
        return
    extensions = spark.conf.get("spark.sql.extensions", None) or ""
    if DELTA_EXTENSION in [name.strip() for name in extensions.split(",")]:
        return
    raise EngineCapabilityError(
        f"the Spark server at {where} has no Delta Lake: spark.sql.extensions is "
        f"{extensions or 'empty'}, expected it to list {DELTA_EXTENSION}. Start the server with "
        "delta-spark: --packages io.delta:delta-spark_4.2_2.13:4.4.0 "
        f"--conf spark.sql.extensions={DELTA_EXTENSION} "
        f"--conf spark.sql.catalog.spark_catalog={DELTA_CATALOG} "
        "(python -m lakehouse_ml.cluster start does this), or set remote.check_delta: false in "
        "conf/<env>/spark.yml for a platform whose Delta support is built in"
    )


def invalid_column_names(columns: list[str]) -> list[str]:
    """The names among ``columns`` that delta-spark refuses without column mapping."""
    return [name for name in columns if any(ch in INVALID_COLUMN_CHARACTERS for ch in name)]


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _plain_ddl(data_type: DataType) -> tuple[str, bool]:
    """The DDL of ``data_type`` with every string type plain (no collation), and whether it holds one."""
    if isinstance(data_type, StringType):
        return "string", True
    if isinstance(data_type, ArrayType):
        element, strings = _plain_ddl(data_type.elementType)
        return f"array<{element}>", strings
    if isinstance(data_type, MapType):
        (key, in_key), (value, in_value) = _plain_ddl(data_type.keyType), _plain_ddl(data_type.valueType)
        return f"map<{key},{value}>", in_key or in_value
    if isinstance(data_type, StructType):
        fields = [(field.name, *_plain_ddl(field.dataType)) for field in data_type.fields]
        ddl = "struct<" + ",".join(f"{_quoted(name)}:{ddl}" for name, ddl, _ in fields) + ">"
        return ddl, any(strings for _, _, strings in fields)
    return data_type.simpleString(), False


def portable(data: DataFrame) -> DataFrame:
    """``data`` with every string-holding column cast to the plain string type.

    A no-op on Sail; on JVM Spark it removes the explicit collation UDF results carry, which
    delta-rs could not read back (see the module docstring).
    """
    columns: list[Column] = []
    changed = False
    for field in data.schema.fields:
        ddl, strings = _plain_ddl(field.dataType)
        column = F.col(_quoted(field.name))
        changed |= strings
        columns.append(column.cast(ddl).alias(field.name) if strings else column)
    return data.select(*columns) if changed else data


JSON_TIMESTAMP_FORMAT = "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"


def json_text(struct: Column) -> Column:
    """``to_json(struct)`` with the same text for timestamps on every engine (microseconds, UTC offset)."""
    return F.to_json(struct, {"timestampFormat": JSON_TIMESTAMP_FORMAT})


def is_table_creation(version: int, operation: str) -> bool:
    """Whether a history entry is the commit that created the table, as either engine names it."""
    return operation in TABLE_CREATION_OPERATIONS or (version == 0 and operation == "WRITE")


def python_runs_on_executors(spark: SparkSession) -> bool:
    """Whether Python shipped in ``mapInPandas`` runs in executors' processes, not the server's."""
    return engine_of(spark) == JVM_SPARK
