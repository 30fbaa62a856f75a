"""Validation of a feature table frame against its contract, run before every write.

Three steps, each pure (data in, data out, no I/O):

- ``feature_summaries``: per-feature statistics of the frame, computed by Spark in one query;
- ``check_contract``: the contract's promises checked against the frame (one more Spark query),
  returned as ``Violation`` records, hard (blocks the write) or soft (a warning);
- ``enforce``: logs the soft violations and raises ``FeatureContractViolation`` on any hard one.

``summary_metrics`` flattens the summaries for MLflow, and ``apply_null_policy`` applies each
feature's null policy when features are served to a model, so training and serving agree.

Engine notes (Spark Connect on Sail): no cache, no RDD, no ``approxQuantile``; percentiles use the
scalar ``percentile_approx`` once per quantile; ``approx_count_distinct`` runs on the value cast to
string because Sail does not implement it for floating-point columns.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from functools import reduce
from typing import Any, Literal

import pandas as pd
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import (
    DataType,
    NumericType,
    TimestampNTZType,
    TimestampType,
)

from lakehouse_ml.features.contracts import FeatureContract, FeatureSpec
from lakehouse_ml.features.expressions_spark import column_named, to_spark
from lakehouse_ml.features.rules import Rule, allowed_values_rule, number_text, range_rule, reason_text

logger = logging.getLogger(__name__)

QUANTILES: dict[str, float] = {"p01": 0.01, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p99": 0.99}
SUMMARY_COLUMNS = [
    "table",
    "contract_hash",
    "feature",
    "rows",
    "nulls",
    "null_rate",
    "distinct",
    "min",
    "max",
    "mean",
    *QUANTILES,
    "top_values",
]
METRIC_STATS = ("null_rate", "distinct", "min", "max", "mean", "p50")
MAX_NULL_RATE = 0.5  # soft rule: an impute/drop feature more than half null is suspicious
TOP_VALUES = 5  # most frequent values kept per categorical feature
EXAMPLES = 5  # offending examples kept per violation

_METRIC_UNSAFE = re.compile(r"[^A-Za-z0-9_\-./ ]")


class FeatureContractViolation(ValueError):
    """A feature table frame breaks a hard promise of its contract."""


@dataclass(frozen=True)
class Violation:
    """One broken promise: which table, feature and rule, what was expected and what was found."""

    table: str
    feature: str
    rule: str
    severity: Literal["hard", "soft"]
    expected: str
    offending: str

    def describe(self) -> str:
        """``<table>.<feature>: <rule> expected <expected>, got <offending>``, as every rule reads."""
        return reason_text(f"{self.table}.{self.feature}", self.rule, self.expected, self.offending)


# --- summaries ---------------------------------------------------------------------------------


def feature_summaries(frame: DataFrame, contract: FeatureContract) -> pd.DataFrame:
    """One row of statistics per contract feature, computed by Spark in a single query.

    Columns: ``SUMMARY_COLUMNS``. ``rows`` counts the frame's rows; ``distinct`` is approximate.
    Numeric features (Spark numeric types) get min/max/mean and ``percentile_approx`` p01..p99,
    ignoring NaN; other features (strings, booleans, times) get ``top_values``, a JSON object of
    their ``TOP_VALUES`` most frequent non-null values and counts (ties by value). An empty frame
    gives rows=0, nulls=0 and NaN rates/statistics; a feature missing from the frame gives a row
    with only ``rows`` set (``check_contract`` reports the missing column).
    """
    types = _column_types(frame)
    present = [name for name in contract.feature_names if name in types]
    numeric = {name for name in present if _is_numeric(types[name])}
    categorical = [name for name in present if name not in numeric]

    aggregates = [F.count(F.lit(1)).alias("rows")]
    for index, name in enumerate(present):
        aggregates += _stat_aggregates(f"f{index}", column_named(name), name in numeric)
    stats = frame.agg(*aggregates)
    if categorical:
        stats = stats.crossJoin(_top_values_frame(frame, categorical))
    result = stats.collect()[0].asDict(recursive=True)

    top = _top_values_json(result.get("top_values") or [], categorical)
    rows = int(result["rows"])
    records = []
    for name in contract.feature_names:
        record: dict[str, Any] = {
            "table": contract.table,
            "contract_hash": contract.hash,
            "feature": name,
            "rows": rows,
        }
        if name in types:
            key = f"f{present.index(name)}"
            nulls = int(result[f"{key}_nulls"])
            record.update(
                nulls=nulls,
                null_rate=nulls / rows if rows else math.nan,
                distinct=int(result[f"{key}_distinct"] or 0),
                top_values=top.get(name),
            )
            if name in numeric:
                for stat in ("min", "max", "mean", *QUANTILES):
                    record[stat] = result[f"{key}_{stat}"]
        records.append(record)
    return _summary_frame(records)


def _stat_aggregates(key: str, column: Column, numeric: bool) -> list[Column]:
    """The aggregate expressions of one feature, aliased ``<key>_<stat>``."""
    aggregates = [
        F.count(F.when(column.isNull(), True)).alias(f"{key}_nulls"),
        F.approx_count_distinct(column.cast("string")).alias(f"{key}_distinct"),
    ]
    if numeric:
        value = F.nanvl(column.cast("double"), F.lit(None).cast("double"))  # NaN: not a statistic
        aggregates += [
            F.min(value).alias(f"{key}_min"),
            F.max(value).alias(f"{key}_max"),
            F.avg(value).alias(f"{key}_mean"),
        ]
        aggregates += [
            F.percentile_approx(value, quantile).alias(f"{key}_{stat}") for stat, quantile in QUANTILES.items()
        ]
    return aggregates


def _top_values_frame(frame: DataFrame, names: list[str]) -> DataFrame:
    """A one-row frame: ``top_values``, the most frequent non-null values of each named column."""
    pairs = F.explode(
        F.array(
            *[
                F.struct(F.lit(name).alias("feature"), column_named(name).cast("string").alias("value"))
                for name in names
            ]
        )
    )
    counts = (
        frame.select(pairs.alias("pair"))
        .select("pair.feature", "pair.value")
        .filter(F.col("value").isNotNull())
        .groupBy("feature", "value")
        .count()
    )
    rank = F.row_number().over(Window.partitionBy("feature").orderBy(F.desc("count"), F.asc("value")))
    top = counts.withColumn("rank", rank).filter(F.col("rank") <= TOP_VALUES)
    return top.agg(F.collect_list(F.struct("feature", "value", "count")).alias("top_values"))


def _top_values_json(entries: list[dict[str, Any]], names: list[str]) -> dict[str, str]:
    """``{feature: '{"value": count, ...}'}``, most frequent first (ties by value)."""
    grouped: dict[str, list[tuple[str, int]]] = {name: [] for name in names}
    for entry in entries:
        grouped[entry["feature"]].append((entry["value"], int(entry["count"])))
    return {
        name: json.dumps(dict(sorted(pairs, key=lambda pair: (-pair[1], pair[0])))) for name, pairs in grouped.items()
    }


def _summary_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """The summaries as a pandas frame with stable columns and dtypes."""
    summaries = pd.DataFrame.from_records(records, columns=SUMMARY_COLUMNS)
    summaries["rows"] = summaries["rows"].astype("int64")
    for column in ("nulls", "distinct"):
        summaries[column] = summaries[column].astype("Int64")
    for column in ("null_rate", "min", "max", "mean", *QUANTILES):
        summaries[column] = pd.to_numeric(summaries[column], errors="coerce").astype("float64")
    summaries["top_values"] = summaries["top_values"].astype(object).where(summaries["top_values"].notna(), None)
    return summaries


# --- contract checks ---------------------------------------------------------------------------


def check_contract(frame: DataFrame, contract: FeatureContract, summaries: pd.DataFrame) -> list[Violation]:
    """Check the frame against the contract; hard rules run in one Spark query.

    Hard rules:

    - ``schema``: entity keys, timestamp key, ingested_at key (if declared) and every feature are
      columns; the timestamp key is of timestamp type; keys and timestamp hold no nulls; a feature
      with a declared range is numeric;
    - ``key_uniqueness``: (entity keys + timestamp key) is unique among rows with non-null keys;
    - ``range``: no non-null value outside the declared [minimum, maximum] (NaN counts as outside);
    - ``allowed_values``: no non-null value outside the declared allowed values.

    Soft rule ``null_rate`` (read from ``summaries``): a feature whose null policy is ``impute`` or
    ``drop`` may arrive with nulls, but more than ``MAX_NULL_RATE`` (half) of its rows null is a
    warning; features with null policy ``keep`` have no null-rate rule.
    """
    types = _column_types(frame)
    violations = _schema_violations(contract, types)
    violations += _data_violations(frame, contract, types)
    violations += _null_rate_violations(contract, summaries)
    return violations


def _schema_violations(contract: FeatureContract, types: dict[str, DataType]) -> list[Violation]:
    """Missing columns, a timestamp key of the wrong type, a range on a non-numeric column."""
    violations = [
        _hard(contract, name, "schema", "column present", "column missing")
        for name in _required_columns(contract)
        if name not in types
    ]
    ts_type = types.get(contract.timestamp_key)
    if ts_type is not None and not isinstance(ts_type, (TimestampType, TimestampNTZType)):
        violations.append(_hard(contract, contract.timestamp_key, "schema", "timestamp type", ts_type.simpleString()))
    for spec in _ranged(contract):
        if spec.name in types and not _is_numeric(types[spec.name]):
            violations.append(
                _hard(
                    contract,
                    spec.name,
                    "schema",
                    "numeric type (range declared)",
                    types[spec.name].simpleString(),
                )
            )
    return violations


def _data_violations(frame: DataFrame, contract: FeatureContract, types: dict[str, DataType]) -> list[Violation]:
    """Null keys, duplicate keys, out-of-range and unexpected values: one Spark query."""
    rules = _value_rules(contract, types)
    parts = [
        part
        for part in (_offenders(frame, contract, types, rules), _duplicates(frame, contract, types))
        if part is not None
    ]
    if not parts:
        return []
    found = reduce(DataFrame.unionByName, parts)
    group = Window.partitionBy("rule", "feature")
    ranked = found.select(
        "*",
        F.row_number()
        .over(group.orderBy(F.desc("count"), F.asc_nulls_last("number"), F.asc_nulls_last("value")))
        .alias("rank"),
        F.sum("count").over(group).alias("rows"),
        F.count(F.lit(1)).over(group).alias("values"),
        F.min("number").over(group).alias("low"),
        F.max("number").over(group).alias("high"),
    ).filter(F.col("rank") <= EXAMPLES)
    by_check: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in ranked.collect():
        by_check[(row["rule"], row["feature"])].append(row.asDict())
    for rows in by_check.values():
        rows.sort(key=lambda row: row["rank"])
    return _describe_findings(contract, by_check, rules)


def _value_rules(contract: FeatureContract, types: dict[str, DataType]) -> list[tuple[str, Rule]]:
    """``(feature, rule)``: the shared range rule of each numeric feature present (a range on
    another type is a schema violation) and the allowed-values rule of each feature present."""
    found = []
    for spec in contract.features:
        where = f"{contract.table}.{spec.name}"
        for rule in (range_rule(spec, spec.name, where), allowed_values_rule(spec, spec.name, where)):
            if (
                rule is not None
                and spec.name in types
                and (rule.numeric_column is None or _is_numeric(types[spec.name]))
            ):
                found.append((spec.name, rule))
    return found


def _offenders(
    frame: DataFrame, contract: FeatureContract, types: dict[str, DataType], rules: list[tuple[str, Rule]]
) -> DataFrame | None:
    """Counts of offending values per (rule, feature, value): null keys, range, allowed values."""
    checks: list[tuple[str, str, Column, Column]] = []
    for key in _key_columns(contract):
        if key in types:
            checks.append(("schema", key, column_named(key).isNull(), F.lit(None).cast("double")))
    for feature, rule in rules:
        number = column_named(feature).cast("double") if rule.rule == "range" else F.lit(None).cast("double")
        checks.append((rule.rule, feature, to_spark(rule.breaks), number))
    if not checks:
        return None
    elements = [
        F.when(
            condition,
            F.struct(
                F.lit(rule).alias("rule"),
                F.lit(feature).alias("feature"),
                column_named(feature).cast("string").alias("value"),
                number.alias("number"),
            ),
        )
        for rule, feature, condition, number in checks
    ]
    any_offence = reduce(lambda a, b: a | b, [condition for _, _, condition, _ in checks])
    return (
        frame.filter(any_offence)
        .select(F.explode(F.array(*elements)).alias("offence"))
        .filter(F.col("offence").isNotNull())
        .select("offence.*")
        .groupBy("rule", "feature", "value", "number")
        .count()
    )


def _duplicates(frame: DataFrame, contract: FeatureContract, types: dict[str, DataType]) -> DataFrame | None:
    """Counts of each (entity keys + timestamp key) occurring more than once (non-null keys)."""
    keys = _key_columns(contract)
    if not keys or any(key not in types for key in keys):
        return None
    described = F.concat_ws(
        ", ", *[F.concat(F.lit(f"{key}="), F.coalesce(column_named(key).cast("string"), F.lit("null"))) for key in keys]
    )
    not_null = reduce(lambda a, b: a & b, [column_named(key).isNotNull() for key in keys])
    return (
        frame.filter(not_null)
        .groupBy(*[column_named(key) for key in keys])
        .count()
        .filter(F.col("count") > 1)
        .select(
            F.lit("key_uniqueness").alias("rule"),
            F.lit(",".join(keys)).alias("feature"),
            described.alias("value"),
            F.lit(None).cast("double").alias("number"),
            F.col("count"),
        )
    )


def _describe_findings(
    contract: FeatureContract, found: dict[tuple[str, str], list[dict[str, Any]]], rules: list[tuple[str, Rule]]
) -> list[Violation]:
    """Turn the query's findings into violations, in rule then declaration order."""
    violations = []
    for key in _key_columns(contract):
        if rows := found.get(("schema", key)):
            what = "timestamp key" if key == contract.timestamp_key else "entity key"
            violations.append(
                _hard(contract, key, "schema", f"no nulls ({what})", f"{rows[0]['rows']} rows with a null")
            )
    keys = _key_columns(contract)
    if rows := found.get(("key_uniqueness", ",".join(keys))):
        shown = ", ".join(f"({row['value']}) x{row['count']}" for row in rows)
        violations.append(
            _hard(
                contract,
                ",".join(keys),
                "key_uniqueness",
                f"unique ({', '.join(keys)})",
                f"{rows[0]['values']} duplicated keys over {rows[0]['rows']} rows: " + _truncated(shown, rows),
            )
        )
    for feature, rule in rules:
        if rule.rule == "range" and (rows := found.get(("range", feature))):
            shown = ", ".join(f"{number_text(row['number'])} x{row['count']}" for row in rows)
            violations.append(
                _hard(
                    contract,
                    feature,
                    "range",
                    rule.expected,
                    f"{rows[0]['rows']} values out of range (min found {number_text(rows[0]['low'])}, "
                    f"max found {number_text(rows[0]['high'])}): " + _truncated(shown, rows),
                )
            )
    for feature, rule in rules:
        if rule.rule == "allowed_values" and (rows := found.get(("allowed_values", feature))):
            shown = ", ".join(f"{row['value']!r} x{row['count']}" for row in rows)
            violations.append(
                _hard(
                    contract,
                    feature,
                    "allowed_values",
                    rule.expected,
                    f"{rows[0]['rows']} rows with unexpected values: " + _truncated(shown, rows),
                )
            )
    return violations


def _null_rate_violations(contract: FeatureContract, summaries: pd.DataFrame) -> list[Violation]:
    """Soft rule: impute/drop features more than ``MAX_NULL_RATE`` null (read from summaries)."""
    if summaries is None or summaries.empty or "null_rate" not in summaries:
        return []
    mine = summaries[summaries["table"] == contract.table].set_index("feature")
    violations = []
    for spec in contract.features:
        if spec.null_policy.action not in ("impute", "drop") or spec.name not in mine.index:
            continue
        row = mine.loc[spec.name]
        rate = row["null_rate"]
        if pd.notna(rate) and rate > MAX_NULL_RATE:
            violations.append(
                Violation(
                    contract.table,
                    spec.name,
                    "null_rate",
                    "soft",
                    f"null_rate <= {MAX_NULL_RATE}",
                    f"{rate:.3f} ({row['nulls']} of {row['rows']} rows null; null policy {spec.null_policy.action})",
                )
            )
    return violations


# --- enforcement and metrics -------------------------------------------------------------------


def enforce(violations: list[Violation]) -> None:
    """Log soft violations as warnings; raise ``FeatureContractViolation`` on any hard one."""
    for violation in violations:
        if violation.severity == "soft":
            logger.warning("Feature contract warning: %s", violation.describe())
    hard = [violation for violation in violations if violation.severity == "hard"]
    if hard:
        raise FeatureContractViolation(
            f"{len(hard)} hard feature contract violation(s):\n"
            + "\n".join(f"  {violation.describe()}" for violation in hard)
        )


def summary_metrics(summaries: pd.DataFrame) -> dict[str, float]:
    """Flat MLflow metrics ``<table>.<feature>.<stat>``; missing (NaN/None) stats are skipped."""
    metrics = {}
    for row in summaries.to_dict("records"):
        for stat in METRIC_STATS:
            value = row.get(stat)
            if value is None or pd.isna(value):
                continue
            name = _METRIC_UNSAFE.sub("_", f"{row['table']}.{row['feature']}.{stat}")
            metrics[name] = float(value)
    return metrics


# --- null policy -------------------------------------------------------------------------------


def apply_null_policy(frame: DataFrame, contract: FeatureContract, features: list[str] | None = None) -> DataFrame:
    """Apply each feature's null policy: impute (coalesce), drop (filter the row) or keep."""
    types = _column_types(frame)
    specs = [contract.feature(name) for name in (features or contract.feature_names)]
    missing = [spec.name for spec in specs if spec.name not in types]
    if missing:
        raise ValueError(f"feature table '{contract.table}': cannot apply null policy, columns missing: {missing}")
    imputed = {
        spec.name: F.coalesce(column_named(spec.name), _impute_value(contract, spec, types[spec.name]))
        for spec in specs
        if spec.null_policy.action == "impute"
    }
    if imputed:
        frame = frame.withColumns(imputed)
    dropped = [column_named(spec.name).isNotNull() for spec in specs if spec.null_policy.action == "drop"]
    if dropped:
        frame = frame.filter(reduce(lambda a, b: a & b, dropped))
    return frame


def _impute_value(contract: FeatureContract, spec: FeatureSpec, dtype: DataType) -> Column:
    """The impute literal cast to the column's type; a non-number for a numeric column fails."""
    value = spec.null_policy.value
    if _is_numeric(dtype) and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ValueError(
            f"feature table '{contract.table}': feature '{spec.name}' is {dtype.simpleString()} "
            f"but its null policy imputes {value!r}"
        )
    return F.lit(value).cast(dtype)


# --- helpers -----------------------------------------------------------------------------------


def _column_types(frame: DataFrame) -> dict[str, DataType]:
    """The frame's columns and their Spark types."""
    return {field.name: field.dataType for field in frame.schema.fields}


def _is_numeric(dtype: DataType) -> bool:
    """Numeric (integral, floating or decimal); booleans, strings and times are categorical."""
    return isinstance(dtype, NumericType)


def _key_columns(contract: FeatureContract) -> list[str]:
    """Entity keys then the timestamp key, without repeats."""
    return list(dict.fromkeys([*contract.entity_keys, contract.timestamp_key]))


def _required_columns(contract: FeatureContract) -> list[str]:
    """Every column the contract promises."""
    columns = [*_key_columns(contract)]
    if contract.ingested_at_key:
        columns.append(contract.ingested_at_key)
    return list(dict.fromkeys([*columns, *contract.feature_names]))


def _ranged(contract: FeatureContract) -> list[FeatureSpec]:
    """Features that declare a minimum or a maximum."""
    return [spec for spec in contract.features if spec.minimum is not None or spec.maximum is not None]


def _truncated(shown: str, rows: list[dict[str, Any]]) -> str:
    """Examples, with a note when more distinct values exist than are shown."""
    total = rows[0]["values"]
    return shown if total <= len(rows) else f"{shown}, ... ({total} distinct)"


def _hard(contract: FeatureContract, feature: str, rule: str, expected: str, offending: str) -> Violation:
    """A hard violation of ``contract``."""
    return Violation(contract.table, feature, rule, "hard", expected, offending)
