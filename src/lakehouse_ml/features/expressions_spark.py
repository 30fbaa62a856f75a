"""Compile :mod:`lakehouse_ml.features.expressions` to Spark columns (batch inference, validation),
and add the on-demand features to a Spark frame (the training set, batch inference)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import reduce
from typing import Any

from pyspark.sql import Column
from pyspark.sql import functions as F

from lakehouse_ml.features.expressions import MICROS_PER_DAY, ROUNDING_SCALE, Col, Expr, Lit, LookupTime, Op
from lakehouse_ml.features.on_demand import TYPES, OnDemandFeature, computable


def rounded(column: Column, digits: int) -> Column:
    """``column`` (a double) rounded to ``digits`` decimals, halves away from zero, alike on every engine."""
    exact = F.round(column.try_cast(f"decimal(38,{ROUNDING_SCALE})"), digits).cast("double")
    # NaN, infinities and magnitudes beyond 1e29 have no such decimal: they round as doubles.
    return F.coalesce(exact, F.round(column, digits))


def column_named(name: str) -> Column:
    """A column by exact name (dots and other characters quoted)."""
    return F.col("`" + name.replace("`", "``") + "`")


def _older_than(op: Op, args: list[Column], at: Column) -> Column:
    # In microseconds: an interval literal would depend on the engine's interval support.
    return F.unix_micros(args[0]) < F.unix_micros(at) - F.lit(op.params[0])


def _age_days(args: list[Column], at: Column) -> Column:
    return rounded((F.unix_micros(at) - F.unix_micros(args[0])) / F.lit(MICROS_PER_DAY), 2)


def _is_in(op: Op, args: list[Column]) -> Column:
    # An empty IN list is not valid SQL everywhere: nothing matches a non-null value.
    return args[0].isin(list(op.params)) if op.params else F.when(args[0].isNotNull(), F.lit(False))


_OPS: dict[str, Callable[[Op, list[Column], Column], Column]] = {
    "is_null": lambda op, a, at: a[0].isNull(),
    "not_null": lambda op, a, at: a[0].isNotNull(),
    "is_nan": lambda op, a, at: F.isnan(a[0]),
    "lt": lambda op, a, at: a[0] < a[1],
    "gt": lambda op, a, at: a[0] > a[1],
    "and": lambda op, a, at: reduce(lambda x, y: x & y, a),
    "or": lambda op, a, at: reduce(lambda x, y: x | y, a),
    "not": lambda op, a, at: ~a[0],
    "is_in": lambda op, a, at: _is_in(op, a),
    "older_than": _older_than,
    "age_days": lambda op, a, at: _age_days(a, at),
    # Dates in the session time zone, which spark.yml pins to UTC.
    "days_between": lambda op, a, at: F.datediff(F.to_date(a[1]), F.to_date(a[0])),
    "text": lambda op, a, at: F.coalesce(a[0].cast("string"), F.lit("null")),
    "concat": lambda op, a, at: F.concat(*a),
    "when": lambda op, a, at: F.when(a[0], a[1]),
}


_TIMED = {"older_than", "age_days"}  # ops that read the lookup time


def to_spark(expr: Expr, lookup_time: Column | None = None) -> Column:
    """The expression as a Spark column; ``lookup_time`` is a timestamp column (usually a literal),
    needed only by expressions that refer to the lookup time."""
    if isinstance(expr, Col):
        return column_named(expr.name)
    if isinstance(expr, Lit):
        return F.lit(expr.value)
    timed = isinstance(expr, LookupTime) or (isinstance(expr, Op) and expr.name in _TIMED)
    if timed and lookup_time is None:
        raise ValueError(f"expression {expr!r} needs the lookup time, and none was given")
    if isinstance(expr, LookupTime):
        return lookup_time
    return _OPS[expr.name](expr, [to_spark(arg, lookup_time) for arg in expr.args], lookup_time)


def with_on_demand_features(frame: Any, features: Mapping[str, OnDemandFeature], lookup_time: str) -> Any:
    """A Spark frame with each computable feature as a column, computed as of the timestamp column
    ``lookup_time`` (the training set's and batch inference's cutoff)."""
    usable = computable(features, frame.columns)
    if not usable:
        return frame
    at = column_named(lookup_time)
    return frame.withColumns({name: to_spark(f.expr, at).cast(TYPES[f.type][0]) for name, f in usable.items()})
