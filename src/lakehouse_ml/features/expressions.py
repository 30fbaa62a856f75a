"""A tiny expression language for row rules, compiled to Spark columns and to Arrow arrays.

A rule written once as an :data:`Expr` runs in batch (``expressions_spark.to_spark``, a Spark
``Column``) and at request time (``expressions_arrow.to_arrow``, ``pyarrow.compute`` over the
looked-up rows). Each op is implemented once per backend, and a parity test runs every op through
both. This module imports neither engine, so serving can build rules without pyspark.

Semantics shared by both backends (Spark's three-valued logic):

- ``and``/``or``/``not`` are Kleene: a null operand gives null unless the other decides;
- ``when(condition, value)`` is ``value`` where the condition is true, null elsewhere (a null
  condition counts as false);
- ``is_nan`` is false for integers, null for a null;
- ``lt``/``gt`` order a NaN above every number, or below when its sign bit is set, and -0.0 equal
  to 0.0, as the embedded engine does (IEEE would call every comparison with NaN false);
- ``text`` renders a value as the embedded engine's cast to string does, ``"null"`` for a null;
- ``age_days(stamp)`` is ``(lookup time - stamp)`` in days, rounded to 2 decimals as
  ``expressions_spark.rounded`` does on every engine (to 9 decimals, then halves away from zero);
- ``days_between(start, end)`` counts the UTC midnights from ``start``'s date to ``end``'s (whole
  days, negative when ``end`` is earlier; the engine's session time zone is UTC).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

MICROS_PER_DAY = 86_400_000_000
# Decimal places a double is reduced to before it is rounded, so that every engine and the Arrow
# backend round alike (expressions_spark.rounded says why).
ROUNDING_SCALE = 9


@dataclass(frozen=True)
class Col:
    """A column of the judged rows, by exact name."""

    name: str


@dataclass(frozen=True)
class Lit:
    """A constant: a number, string, bool or None."""

    value: Any


@dataclass(frozen=True)
class LookupTime:
    """The time the rows are judged at (the scoring time, or the request time online)."""


@dataclass(frozen=True)
class Op:
    """An operation over sub-expressions; ``params`` holds non-expression arguments."""

    name: str
    args: tuple[Expr, ...]
    params: tuple[Any, ...] = ()


Expr = Col | Lit | LookupTime | Op

# op name -> its number of expression arguments (None: any number)
OPS: dict[str, int | None] = {
    "is_null": 1,
    "not_null": 1,
    "is_nan": 1,
    "lt": 2,
    "gt": 2,
    "and": None,
    "or": None,
    "not": 1,
    "is_in": 1,  # params: the values (nulls never match)
    "older_than": 1,  # params: an age in microseconds; stamp < lookup time - age
    "age_days": 1,
    "days_between": 2,
    "text": 1,
    "concat": None,
    "when": 2,
}


def _op(name: str, *args: Expr, params: tuple[Any, ...] = ()) -> Op:
    arity = OPS[name]
    if arity is not None and len(args) != arity:
        raise ValueError(f"expression op {name!r}: expected {arity} arguments, got {len(args)}")
    return Op(name, tuple(args), params)


def is_null(value: Expr) -> Op:
    """True where ``value`` is null."""
    return _op("is_null", value)


def not_null(value: Expr) -> Op:
    """True where ``value`` is not null."""
    return _op("not_null", value)


def is_nan(value: Expr) -> Op:
    """True where a floating value is NaN."""
    return _op("is_nan", value)


def lt(left: Expr, right: Expr) -> Op:
    """``left < right`` (null if either is null)."""
    return _op("lt", left, right)


def gt(left: Expr, right: Expr) -> Op:
    """``left > right`` (null if either is null)."""
    return _op("gt", left, right)


def and_(*conditions: Expr) -> Expr:
    """All conditions (Kleene); one condition is itself."""
    return conditions[0] if len(conditions) == 1 else _op("and", *conditions)


def or_(*conditions: Expr) -> Expr:
    """Any condition (Kleene); one condition is itself."""
    return conditions[0] if len(conditions) == 1 else _op("or", *conditions)


def not_(condition: Expr) -> Op:
    """The negation (null stays null)."""
    return _op("not", condition)


def is_in(value: Expr, values: tuple[Any, ...]) -> Op:
    """True where ``value`` is one of ``values`` (null for a null value; a null in ``values`` never matches)."""
    return _op("is_in", value, params=tuple(v for v in values if v is not None))


def older_than(stamp: Expr, age: timedelta) -> Op:
    """True where ``stamp`` is before ``lookup time - age`` (null for a null stamp)."""
    return _op("older_than", stamp, params=(age // timedelta(microseconds=1),))


def age_days(stamp: Expr) -> Op:
    """Days from ``stamp`` to the lookup time, rounded to 2 decimals (a double)."""
    return _op("age_days", stamp)


def days_between(start: Expr, end: Expr) -> Op:
    """Whole UTC calendar days from ``start`` to ``end`` (an integer; null if either is null)."""
    return _op("days_between", start, end)


def text(value: Expr) -> Op:
    """The value as the engine prints it, ``"null"`` for a null."""
    return _op("text", value)


def concat(*parts: Expr) -> Op:
    """The texts joined (null if any part is null)."""
    return _op("concat", *parts)


def when(condition: Expr, value: Expr) -> Op:
    """``value`` where ``condition`` is true, else null."""
    return _op("when", condition, value)
