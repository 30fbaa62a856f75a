"""Canonical landing schemas: one pandera schema per source, also compiled to Spark checks.

The pandera objects are the single definition. They validate pandas frames directly (e.g. a
silver table read through ``@pandas``), and :func:`spark_failures` turns the same columns, dtypes,
nullability and checks into Spark column expressions, because pandera's Spark backend reports per
dataframe while silver needs a verdict per row to quarantine exactly the failing records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import pandera.pandas as pa
from pyspark.sql import Column
from pyspark.sql import functions as F

# Cross-field rules: name → (pandas rule on the frame, Spark rule on columns, what is expected).
# Both sides are written out because a lambda cannot be translated to Spark.
FUTURE_TOLERANCE = pd.Timedelta(hours=1)


@dataclass(frozen=True)
class RowRule:
    """A rule over several fields of one record, stated for pandas and for Spark."""

    name: str
    expectation: str
    pandas_rule: Callable[[pd.DataFrame], pd.Series]
    spark_rule: Callable[[], Column]
    evidence: tuple[str, ...]


NOT_IN_FUTURE = RowRule(
    name="event_ts_not_after_delivery",
    expectation="event_ts at most 1 hour after delivered_at",
    pandas_rule=lambda df: df["event_ts"] <= df["delivered_at"] + FUTURE_TOLERANCE,
    spark_rule=lambda: (
        F.col("event_ts") <= F.col("delivered_at") + F.expr(f"INTERVAL {int(FUTURE_TOLERANCE.total_seconds())} SECONDS")
    ),
    evidence=("event_ts", "delivered_at"),
)
DISCOUNT_WITHIN_AMOUNT = RowRule(
    name="discount_not_above_amount",
    expectation="discount <= amount",
    pandas_rule=lambda df: df["discount"] <= df["amount"],
    spark_rule=lambda: F.col("discount") <= F.col("amount"),
    evidence=("discount", "amount"),
)

_ID = pa.Column(str, pa.Check.str_length(min_value=1), nullable=False)
# Event and delivery times are UTC instants; coerce so delta-rs' microsecond reads compare equal.
_TS = pa.Column(pd.DatetimeTZDtype("ns", "UTC"), nullable=False, coerce=True)
_COUNTRY = pa.Column(str, pa.Check.str_matches(r"^[A-Z]{2}$"), nullable=False)
CURRENCIES = ("EUR", "USD", "GBP", "PLN", "CHF", "SEK")


def _schema(name: str, columns: dict[str, pa.Column], rules: tuple[RowRule, ...]) -> pa.DataFrameSchema:
    """Build a source schema whose frame-level checks are the given row rules."""
    return pa.DataFrameSchema(
        {"event_id": _ID, "customer_id": _ID, "event_ts": _TS, **columns, "delivered_at": _TS},
        checks=[pa.Check(rule.pandas_rule, name=rule.name, element_wise=False) for rule in rules],
        name=name,
        strict=False,
        metadata={"row_rules": [rule.name for rule in rules]},
    )


SCHEMAS: dict[str, pa.DataFrameSchema] = {
    "orders": _schema(
        "orders",
        {
            "amount": pa.Column(float, pa.Check.ge(0), nullable=False),
            "currency": pa.Column(str, pa.Check.isin(list(CURRENCIES)), nullable=False),
            "items": pa.Column(int, pa.Check.ge(1), nullable=False),
            "discount": pa.Column(float, pa.Check.ge(0), nullable=False),
        },
        (NOT_IN_FUTURE, DISCOUNT_WITHIN_AMOUNT),
    ),
    "customers": _schema(
        "customers",
        {
            "signup_ts": _TS,
            "country": _COUNTRY,
            "channel": pa.Column(str, nullable=False),
            "plan_tier": pa.Column(str, pa.Check.isin(["basic", "standard", "premium"]), nullable=False),
            "monthly_price": pa.Column(float, pa.Check.ge(0), nullable=False),
        },
        (NOT_IN_FUTURE,),
    ),
    "sessions": _schema(
        "sessions",
        {
            "duration_s": pa.Column(int, pa.Check.ge(0), nullable=False),
            "pages": pa.Column(int, pa.Check.ge(1), nullable=False),
            "device": pa.Column(str, nullable=True),
        },
        (NOT_IN_FUTURE,),
    ),
    "tickets": _schema(
        "tickets",
        {
            "category": pa.Column(str, nullable=False),
            "severity": pa.Column(str, pa.Check.isin(["low", "medium", "high"]), nullable=False),
        },
        (NOT_IN_FUTURE,),
    ),
}
ROW_RULES = {rule.name: rule for rule in (NOT_IN_FUTURE, DISCOUNT_WITHIN_AMOUNT)}

SPARK_TYPES = {"str": "string", "float64": "double", "int64": "bigint"}


def spark_type(column: pa.Column) -> str:
    """Return the Spark SQL type of a pandera column (timestamps for DateTime)."""
    dtype = str(column.dtype)
    if "datetime" in dtype.lower():
        return "timestamp"
    return SPARK_TYPES[dtype]


def canonical_columns(schema: pa.DataFrameSchema) -> list[str]:
    """Return the canonical field names of a source, in schema order."""
    return list(schema.columns)


def _check_expression(field: str, check: pa.Check) -> tuple[Column, str]:
    """Translate a built-in pandera column check into (Spark condition that passes, expectation)."""
    stats = check.statistics
    column = F.col(field)
    translations: dict[str, Callable[[], tuple[Column, str]]] = {
        "greater_than_or_equal_to": lambda: (column >= stats["min_value"], f">= {stats['min_value']}"),
        "greater_than": lambda: (column > stats["min_value"], f"> {stats['min_value']}"),
        "less_than_or_equal_to": lambda: (column <= stats["max_value"], f"<= {stats['max_value']}"),
        "less_than": lambda: (column < stats["max_value"], f"< {stats['max_value']}"),
        "in_range": lambda: (
            column.between(stats["min_value"], stats["max_value"]),
            f"in [{stats['min_value']}, {stats['max_value']}]",
        ),
        "isin": lambda: (
            column.isin(list(stats["allowed_values"])),
            f"one of {sorted(stats['allowed_values'])}",
        ),
        "str_matches": lambda: (column.rlike(stats["pattern"]), f"matching {stats['pattern']}"),
        "str_length": lambda: (
            F.length(column) >= (stats.get("min_value") or stats.get("exact_value") or 0),
            f"length >= {stats.get('min_value') or stats.get('exact_value') or 0}",
        ),
    }
    if check.name not in translations:
        raise NotImplementedError(
            f"pandera check {check.name!r} on {field!r} has no Spark translation; add one to "
            "lakehouse_ml.pipelines.ingest.schemas._check_expression"
        )
    return translations[check.name]()


def _failure(field: str, failed: Column, expectation: str, evidence: Column) -> Column:
    """A failure message ``field: expected …, got …`` when ``failed`` holds, else null."""
    got = F.coalesce(evidence.cast("string"), F.lit("null"))
    return F.when(failed, F.concat(F.lit(f"{field}: expected {expectation}, got "), got))


def spark_failures(schema: pa.DataFrameSchema, raw: dict[str, Column]) -> Column:
    """Return an ``array<string>`` column of every failed rule for each typed record.

    ``raw`` maps each field to its raw string value, so a value that could not be parsed is
    reported with what was delivered (``amount: expected double, got 'abc'``).
    """
    failures: list[Column] = []
    for field, column in schema.columns.items():
        typed, delivered = F.col(field), raw[field]
        failures.append(_failure(field, delivered.isNotNull() & typed.isNull(), spark_type(column), delivered))
        if not column.nullable:
            failures.append(_failure(field, delivered.isNull(), "a value", delivered))
        for check in column.checks:
            passes, expectation = _check_expression(field, check)
            failures.append(_failure(field, typed.isNotNull() & ~passes, expectation, typed))
    for rule_name in schema.metadata["row_rules"]:
        rule = ROW_RULES[rule_name]
        evidence = F.concat_ws(", ", *[F.concat(F.lit(f"{f}="), F.col(f).cast("string")) for f in rule.evidence])
        inputs_present = F.lit(True)
        for f in rule.evidence:
            inputs_present = inputs_present & F.col(f).isNotNull()
        failures.append(_failure(rule.name, inputs_present & ~rule.spark_rule(), rule.expectation, evidence))
    return F.array_compact(F.array(*failures))
