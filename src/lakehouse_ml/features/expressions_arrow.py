"""Compile :mod:`lakehouse_ml.features.expressions` to Arrow arrays (the online lookup, serving).

Each op mirrors its Spark compilation in :mod:`lakehouse_ml.features.expressions_spark` on the
embedded engine; ``tests/features/test_expressions.py`` runs both over the same rows.

:func:`to_arrow` evaluates one expression; :func:`evaluate_all` evaluates many, those of one shape
together (a contract's range rule on each of its numbers is one evaluation over all of them).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from functools import reduce
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lakehouse_ml.features.expressions import MICROS_PER_DAY, ROUNDING_SCALE, Col, Expr, Lit, LookupTime, Op

_STAMP = pa.timestamp("us", tz="UTC")


def value_text(value: Any) -> str:
    """A value as the embedded engine's cast to string prints it (``null`` for None).

    Doubles: shortest round-trip digits, plain with a ``.0`` for a whole number, in scientific
    notation (``1e21``, ``1.5e-6``) when the decimal exponent is below -5 or 16 and above;
    ``NaN``, ``inf``, ``-inf``. Timestamps: UTC, trailing zeros of the fraction dropped.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return _double_text(value)
    if isinstance(value, datetime):
        stamp = value.astimezone(timezone.utc) if value.tzinfo else value  # no zone: wall clock, as TIMESTAMP_NTZ
        return f"{stamp.year:04d}" + stamp.strftime("-%m-%d %H:%M:%S.%f").rstrip("0").rstrip(".")
    return str(value)


def _double_text(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    number = Decimal(repr(value))
    exponent = number.adjusted()
    if value != 0 and (exponent < -5 or exponent >= 16):
        sign, digits, _ = number.as_tuple()
        shown = "".join(map(str, digits)).rstrip("0") or "0"
        mantissa = shown[0] + (f".{shown[1:]}" if len(shown) > 1 else "")
        return f"{'-' if sign else ''}{mantissa}e{exponent}"
    text = format(number, "f")
    return text if "." in text else f"{text}.0"


def _micros(stamps: pa.Array) -> pa.Array:
    """Microseconds since the epoch of a timestamp array (any unit, any zone)."""
    return pc.cast(pc.cast(stamps, _STAMP, safe=False), pa.int64())


def _filled(condition: pa.Array) -> pa.Array:
    return pc.fill_null(condition, False)


def _is_nan(values: pa.Array) -> pa.Array:
    if pa.types.is_floating(values.type):
        return pc.is_nan(values)
    return pc.if_else(pc.is_valid(values), False, pa.scalar(None, pa.bool_()))


def _nan_rank(values: pa.Array) -> pa.Array:
    """-1 for a NaN with the sign bit set, 1 for another NaN, 0 otherwise."""
    if not pa.types.is_floating(values.type):
        return pa.array([0] * len(values), pa.int8())
    bits = pa.int64() if pa.types.is_float64(values.type) else pa.int32()
    negative = pc.less(values.view(bits), 0)
    return pc.fill_null(pc.if_else(_is_nan(values), pc.if_else(negative, -1, 1), 0), 0)


def _has_nan(values: pa.Array) -> bool:
    return pa.types.is_floating(values.type) and bool(pc.any(pc.is_nan(values)).as_py())


def _less(left: pa.Array, right: pa.Array) -> pa.Array:
    """``left < right`` in the engine's order: a NaN is above every number, or below it when its sign
    bit is set (as 0/0 gives); -0.0 equals 0.0. IEEE comparison would say false for any NaN."""
    if not (_has_nan(left) or _has_nan(right)):
        # Without a NaN the order is IEEE's (nulls give null): one kernel instead of a dozen, which
        # is most of a request's rule checks.
        return pc.less(left, right)
    left_rank, right_rank = _nan_rank(left), _nan_rank(right)
    less = pc.if_else(pc.not_equal(left_rank, right_rank), pc.less(left_rank, right_rank), pc.less(left, right))
    return pc.if_else(pc.and_(pc.is_valid(left), pc.is_valid(right)), less, pa.scalar(None, pa.bool_()))


def _is_in(op: Op, values: pa.Array) -> pa.Array:
    if op.params:
        matched = pc.is_in(values, value_set=pc.cast(pa.array(op.params), values.type))
    else:
        matched = pa.array([False] * len(values), pa.bool_())
    # As in Spark, a null value is neither in nor out of the list.
    return pc.if_else(pc.is_valid(values), matched, pa.scalar(None, pa.bool_()))


def _older_than(op: Op, args: list[pa.Array], at: pa.Array) -> pa.Array:
    return pc.less(_micros(args[0]), pc.subtract(_micros(at), op.params[0]))


def _age_days(stamps: pa.Array, at: pa.Array) -> pa.Array:
    days = pc.divide(
        pc.cast(pc.subtract(_micros(at), _micros(stamps)), pa.float64(), safe=False), float(MICROS_PER_DAY)
    )
    # As expressions_spark.rounded does on the engines: to 9 decimals, then halves away from zero.
    exact = pc.cast(days, pa.decimal128(38, ROUNDING_SCALE), safe=False)
    # Through the decimal's text: Arrow's decimal-to-double cast is not correctly rounded (3.01
    # came back as 3.0100000000000002), the parse of its text is.
    text = pc.cast(pc.round(exact, 2, round_mode="half_towards_infinity"), pa.string())
    return pc.cast(text, pa.float64())


def _days_between(start: pa.Array, end: pa.Array) -> pa.Array:
    # Both as UTC timestamps of one unit: Arrow counts the days between their UTC dates.
    days = pc.days_between(pc.cast(start, _STAMP, safe=False), pc.cast(end, _STAMP, safe=False))
    return pc.cast(days, pa.int32())


def _text(values: pa.Array) -> pa.Array:
    return pa.array([value_text(value) for value in values.to_pylist()], pa.string())


_OPS: dict[str, Callable[[Op, list[pa.Array], pa.Array], pa.Array]] = {
    "is_null": lambda op, a, at: pc.is_null(a[0]),
    "not_null": lambda op, a, at: pc.is_valid(a[0]),
    "is_nan": lambda op, a, at: _is_nan(a[0]),
    "lt": lambda op, a, at: _less(a[0], a[1]),
    "gt": lambda op, a, at: _less(a[1], a[0]),
    "and": lambda op, a, at: reduce(pc.and_kleene, a),
    "or": lambda op, a, at: reduce(pc.or_kleene, a),
    "not": lambda op, a, at: pc.invert(a[0]),
    "is_in": lambda op, a, at: _is_in(op, a[0]),
    "older_than": _older_than,
    "age_days": lambda op, a, at: _age_days(a[0], at),
    "days_between": lambda op, a, at: _days_between(a[0], a[1]),
    "text": lambda op, a, at: _text(a[0]),
    "concat": lambda op, a, at: pc.binary_join_element_wise(*[pc.cast(x, pa.string()) for x in a], ""),
    "when": lambda op, a, at: pc.if_else(_filled(a[0]), a[1], pa.scalar(None, a[1].type)),
}


def to_arrow(expr: Expr, table: pa.Table, lookup_time: datetime) -> pa.Array:
    """The expression over every row of ``table``, one value per row."""
    at = pa.repeat(pa.scalar(lookup_time, _STAMP), table.num_rows)
    return _evaluate(expr, table, at)


def _evaluate(expr: Expr, table: pa.Table, at: pa.Array) -> pa.Array:
    if isinstance(expr, Col):
        return table.column(expr.name).combine_chunks()
    if isinstance(expr, Lit):
        return pa.repeat(pa.scalar(expr.value), table.num_rows)
    if isinstance(expr, LookupTime):
        return at
    return _OPS[expr.name](expr, [_evaluate(arg, table, at) for arg in expr.args], at)


def evaluate_all(exprs: Mapping[str, Expr], table: pa.Table, lookup_time: datetime) -> dict[str, pa.Array]:
    """Every expression over every row of ``table``, each value the one :func:`to_arrow` gives
    (see :class:`Batched`; keep a ``Batched`` to evaluate the same expressions again)."""
    return Batched(exprs, table.schema).evaluate(table, lookup_time)


@dataclass(frozen=True)
class _Group:
    names: tuple[str, ...]
    template: Expr  # the first member, its varying columns and literals read from slot columns
    columns: tuple[tuple[str, tuple[str, ...]], ...]  # slot -> each member's column
    literals: tuple[tuple[str, pa.Array], ...]  # slot -> each member's literal


class Batched:
    """Expressions over tables of one schema, evaluated by shape: expressions with the same ops
    and params over columns of the same types and literals of the same types (a contract's range
    rule on each of its numbers) are evaluated once, over their columns laid end to end.

    Every op is element-wise, so each row's value is the one :func:`to_arrow` gives. On a hundred
    rows the calls, not the kernels, are the cost: a request's two dozen contract rules are then
    a few dozen kernel calls instead of two hundred.
    """

    def __init__(self, exprs: Mapping[str, Expr], schema: pa.Schema) -> None:
        self.schema = schema
        shapes: dict[Hashable, list[tuple[str, Expr, list[Col | Lit]]]] = {}
        for name, expr in exprs.items():
            leaves: list[Col | Lit] = []
            shapes.setdefault(_shape(expr, schema, leaves), []).append((name, expr, leaves))
        self.names = tuple(exprs)
        self.groups = tuple(_group(members) for members in shapes.values())

    def evaluate(self, table: pa.Table, lookup_time: datetime) -> dict[str, pa.Array]:
        """Every expression over every row of ``table`` (of the schema given)."""
        if table.schema != self.schema:
            raise ValueError(f"expressions batched for schema {self.schema} got a table of schema {table.schema}")
        rows = table.num_rows
        results: dict[str, pa.Array] = {}
        for group in self.groups:
            if not (group.columns or group.literals):  # one member, or members that are one expression
                value = to_arrow(group.template, table, lookup_time)
                results.update((name, value) for name in group.names)
                continue
            members = len(group.names)
            stacked = {
                slot: pa.concat_arrays([table.column(c).combine_chunks() for c in columns])
                for slot, columns in group.columns
            }
            if group.literals:
                repeated = np.repeat(np.arange(members), rows)
                stacked.update((slot, values.take(repeated)) for slot, values in group.literals)
            value = to_arrow(group.template, pa.table(stacked), lookup_time)
            results.update((name, value.slice(k * rows, rows)) for k, name in enumerate(group.names))
        return {name: results[name] for name in self.names}


def _group(members: list[tuple[str, Expr, list[Col | Lit]]]) -> _Group:
    names = tuple(name for name, _, _ in members)
    template, first = members[0][1], members[0][2]
    columns, literals = [], []
    for slot, leaf in enumerate(first):
        same = [leaves[slot] for _, _, leaves in members]
        if all(_identical(other, leaf) for other in same) and (isinstance(leaf, Lit) or len(members) == 1):
            continue  # one literal (or one member): kept in the template
        if isinstance(leaf, Col):
            columns.append((f"_{slot}", tuple(c.name for c in same)))
        else:
            literals.append((f"_{slot}", pa.array([c.value for c in same], pa.scalar(leaf.value).type)))
        template = _with_leaf(template, slot, Col(f"_{slot}"))
    return _Group(names, template, tuple(columns), tuple(literals))


def _shape(expr: Expr, schema: pa.Schema, leaves: list[Col | Lit]) -> Hashable:
    """What must match for expressions to be evaluated together; their columns and literals, in
    order, are appended to ``leaves``."""
    if isinstance(expr, Col):
        leaves.append(expr)
        return ("col", schema.field(expr.name).type)
    if isinstance(expr, Lit):
        leaves.append(expr)
        return ("lit", pa.scalar(expr.value).type)
    if isinstance(expr, LookupTime):
        return ("lookup_time",)
    return (expr.name, tuple(map(_exact, expr.params)), tuple(_shape(arg, schema, leaves) for arg in expr.args))


def _exact(value: Any) -> tuple[type, str]:
    """A value down to its type and sign: Python has ``0.0 == -0.0`` and ``1 == True``."""
    return type(value), repr(value)


def _identical(left: Col | Lit, right: Col | Lit) -> bool:
    """The same column, or the same literal (:func:`_exact`)."""
    if isinstance(left, Lit) and isinstance(right, Lit):
        return _exact(left.value) == _exact(right.value)
    return left == right


def _with_leaf(expr: Expr, slot: int, leaf: Col) -> Expr:
    """``expr`` with its ``slot``-th column or literal (as :func:`_shape` counts them) replaced."""
    counter = [0]

    def walk(node: Expr) -> Expr:
        if isinstance(node, (Col, Lit)):
            counter[0] += 1
            return leaf if counter[0] - 1 == slot else node
        if isinstance(node, Op):
            return Op(node.name, tuple(walk(arg) for arg in node.args), node.params)
        return node

    return walk(expr)
