"""Parity of the two compilers of rule expressions: every op and every contract rule gives the same
values through Spark (the embedded engine) and through Arrow, on hand-picked edge cases and on
generated rows. Each check is one Spark query over one frame holding every case."""

from __future__ import annotations

import math
import struct
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from lakehouse_ml.features import expressions_arrow
from lakehouse_ml.features.contracts import parse_contract
from lakehouse_ml.features.expressions import (
    OPS,
    Col,
    Lit,
    LookupTime,
    Op,
    age_days,
    and_,
    concat,
    days_between,
    gt,
    is_in,
    is_nan,
    is_null,
    lt,
    not_,
    not_null,
    older_than,
    or_,
    text,
    when,
)
from lakehouse_ml.features.expressions_arrow import Batched, evaluate_all, to_arrow, value_text
from lakehouse_ml.features.expressions_spark import to_spark
from lakehouse_ml.features.rules import RULES, table_rules

UTC = timezone.utc
AT = datetime(2026, 3, 1, tzinfo=UTC)
SCHEMA = pa.schema(
    [
        ("t__x", pa.float64()),
        ("t__i", pa.int32()),
        ("t__s", pa.string()),
        ("t__feature_ts", pa.timestamp("us", tz="UTC")),
    ]
)
X, I, S, TS = (Col(name) for name in SCHEMA.names)  # noqa: E741 - the schema's columns x, i, s, ts

EXPRESSIONS = {
    "is_null": is_null(X),
    "not_null": not_null(S),
    "is_nan_x": is_nan(X),
    "is_nan_i": is_nan(I),
    "lt": lt(X, Lit(0.0)),
    "gt_int_float": gt(I, Lit(89.0)),
    "lt_columns": lt(I, X),
    "and": and_(not_null(X), gt(X, Lit(1.0)), not_(is_nan(X))),
    "or": or_(is_nan(X), lt(X, Lit(0.0)), gt(X, Lit(89.0))),
    "not": not_(lt(X, Lit(0.0))),
    "is_in": is_in(S, ("basic", "standard", None)),
    "is_in_none": is_in(S, (None,)),
    "is_in_int": is_in(I, (1, 2)),
    "older_than": older_than(TS, timedelta(days=2)),
    "older_than_odd": older_than(TS, timedelta(days=1, seconds=7, microseconds=3)),
    "age_days": age_days(TS),
    "lookup_time": LookupTime(),
    "days_between": days_between(TS, LookupTime()),
    "days_between_back": days_between(LookupTime(), TS),
    "text_x": text(X),
    "text_i": text(I),
    "text_s": text(S),
    "text_ts": text(TS),
    "text_age": text(age_days(TS)),
    "concat": concat(Lit("'"), text(S), Lit("' and "), text(X)),
    "concat_null": concat(Lit("a"), S),
    "when": when(gt(X, Lit(0.0)), text(X)),
    "when_null_condition": when(lt(I, Lit(3.0)), Lit("small")),
}

CONTRACT = parse_contract(
    "t",
    {
        "description": "test",
        "owner": "tests",
        "entity_keys": ["k"],
        "timestamp_key": "feature_ts",
        "grain": "k x day",
        "refresh": "daily",
        "source": "tests",
        "kind": "changes",
        "features": {
            "x": {
                "compute": {"column": "x"},
                "unit": "n",
                "freshness": "2 days",
                "null_policy": "drop",
                "range": [0, None],
            },
            "i": {
                "compute": {"column": "i"},
                "unit": "n",
                "freshness": "3 days",
                "null_policy": {"impute": 0},
                "range": [0, 89],
            },
            "s": {
                "compute": {"column": "s"},
                "unit": "category",
                "freshness": "3 days",
                "null_policy": "keep",
                "allowed_values": ["basic", "standard", None],
            },
        },
    },
)
RULE_EXPRESSIONS = {
    f"rule{n}": rule.reason()
    for n, rule in enumerate(table_rules({"t": CONTRACT}, ["t__x", "t__i", "t__s"], RULES, AT))
}

NEGATIVE_NAN = struct.unpack("<d", struct.pack("<Q", 0xFFF8000000000000))[0]  # what 0.0 / 0.0 gives on x86
DOUBLES = [
    NEGATIVE_NAN,
    1.0,
    -2.0,
    math.nan,
    math.inf,
    -math.inf,
    None,
    1e-7,
    1e21,
    0.0,
    -0.0,
    90.0,
    1.5e-5,
    1e-5,
    1.5e-6,
    1e16,
    9.999e15,
    1e7,
    5e-324,
    1.7976931348623157e308,
    0.1 + 0.2,
    123456789.123,
    -1.2345678901234568e17,
    1.005,
    2.675,
]
INTS = [0, -1, 89, 90, None, 1, 2, -2147483648, 2147483647]
STRINGS = ["basic", "gold", None, "", "standard", "it's", "Basic", "ünï"]
STAMPS = [
    AT - timedelta(days=1),
    None,
    AT - timedelta(days=2),
    AT - timedelta(days=2, microseconds=1),
    AT + timedelta(days=1),
    AT - timedelta(days=1.005),
    AT - timedelta(days=3, seconds=432),
    AT - timedelta(days=400, hours=5),
    AT,
    datetime(1970, 1, 1, tzinfo=UTC),
    AT - timedelta(days=1, seconds=7, microseconds=3),
    AT - timedelta(days=1, seconds=7, microseconds=4),
    AT - timedelta(seconds=1, microseconds=120),
    datetime(1, 1, 1, tzinfo=UTC) + timedelta(days=1),
    datetime(9999, 12, 31, tzinfo=UTC),
]


def _edge_table() -> pa.Table:
    """Every edge value of every column, each column cycled to the longest list's length."""
    size = max(map(len, (DOUBLES, INTS, STRINGS, STAMPS)))
    cycled = [[values[n % len(values)] for n in range(size)] for values in (DOUBLES, INTS, STRINGS, STAMPS)]
    return pa.table(cycled, schema=SCHEMA)


def _same(left: object, right: object) -> bool:
    return left == right or (
        isinstance(left, float) and isinstance(right, float) and math.isnan(left) and math.isnan(right)
    )


def _assert_parity(spark, table: pa.Table, expressions: dict) -> None:
    """Spark, ``to_arrow`` (each expression alone) and ``evaluate_all`` (all in one plan) agree."""
    engine = (
        spark.createDataFrame(table)
        .select(*[to_spark(expr, F.lit(AT)).alias(name) for name, expr in expressions.items()])
        .toArrow()
    )
    planned = evaluate_all(expressions, table, AT)
    for name, expr in expressions.items():
        expected = engine.column(name).to_pylist()
        for how, got in (
            ("to_arrow", to_arrow(expr, table, AT).to_pylist()),
            ("evaluate_all", planned[name].to_pylist()),
        ):
            differ = [
                (n, table.slice(n, 1).to_pylist()[0], e, g)
                for n, (e, g) in enumerate(zip(expected, got))
                if not _same(e, g)
            ]
            assert not differ and len(expected) == len(got), (
                f"{name}: Spark and {how} differ (row, input, spark, arrow): {differ[:3]}"
            )


def _op_names(expr) -> set[str]:
    return {expr.name}.union(*map(_op_names, expr.args)) if isinstance(expr, Op) else set()


def test_the_parity_checks_cover_every_op():
    assert set().union(*map(_op_names, EXPRESSIONS.values())) == set(OPS)


def test_a_time_rule_compiled_without_a_lookup_time_says_so(spark):
    with pytest.raises(ValueError, match="needs the lookup time"):
        to_spark(concat(Lit("age "), text(age_days(TS))))


def test_every_op_and_rule_gives_the_same_values_in_spark_and_arrow_on_edge_cases(spark):
    table = _edge_table()
    _assert_parity(spark, table, {**EXPRESSIONS, **RULE_EXPRESSIONS})


def test_expressions_of_one_shape_are_evaluated_once_over_their_columns(monkeypatch):
    """Range rules on several numbers differ only in their column and bounds: one evaluation over
    the columns laid end to end gives each rule's values, in its own rows."""
    table = pa.table(
        {
            "a": pa.array([1.0, -1.0, None, math.nan]),
            "b": pa.array([5.0, 500.0, 0.0, NEGATIVE_NAN]),
            "c": pa.array([0.5, 2.0, None, 1.0]),
            "n": pa.array([1, -5, 3, None], pa.int64()),
        }
    )
    exprs = {
        "a": or_(is_nan(Col("a")), lt(Col("a"), Lit(0.0)), gt(Col("a"), Lit(10.0))),
        "b": or_(is_nan(Col("b")), lt(Col("b"), Lit(0.0)), gt(Col("b"), Lit(100.0))),
        "c": or_(is_nan(Col("c")), lt(Col("c"), Lit(1.0)), gt(Col("c"), Lit(10.0))),
        "n": or_(is_nan(Col("n")), lt(Col("n"), Lit(0.0)), gt(Col("n"), Lit(10.0))),  # an int column: its own shape
        "a_again": or_(is_nan(Col("a")), lt(Col("a"), Lit(0.0)), gt(Col("a"), Lit(10.0))),
        "text": text(Col("a")),
    }
    calls: list = []
    each = expressions_arrow.to_arrow
    monkeypatch.setattr(
        expressions_arrow, "to_arrow", lambda expr, t, at: calls.append(t.num_rows) or each(expr, t, at)
    )
    got = evaluate_all(exprs, table, AT)
    assert sorted(calls) == [4, 4, 16]  # a, b, c and a_again together; n; text
    for name, expr in exprs.items():
        assert got[name].to_pylist() == each(expr, table, AT).to_pylist(), name
    assert got["b"].to_pylist() == [False, True, False, True]


def test_literals_and_params_that_python_calls_equal_are_kept_apart():
    """0.0 == -0.0 and 1 == True in Python: expressions that differ only so keep their own values."""
    table = pa.table({"a": pa.array([1.0, -0.0, 0.0]), "b": pa.array([2.0, 0.0, -0.0])})
    exprs = {
        "a_zero": when(gt(Col("a"), Lit(0.0)), Lit(0.0)),
        "b_negative_zero": when(gt(Col("b"), Lit(0.0)), Lit(-0.0)),
        "a_text": concat(text(Col("a")), text(Lit(0.0))),
        "b_text": concat(text(Col("b")), text(Lit(-0.0))),
        "a_in": is_in(Col("a"), (0.0,)),
        "b_in": is_in(Col("b"), (-0.0,)),
    }
    got = evaluate_all(exprs, table, AT)
    for name, expr in exprs.items():
        assert repr(got[name].to_pylist()) == repr(to_arrow(expr, table, AT).to_pylist()), name
    assert repr(got["b_negative_zero"].to_pylist()) == "[-0.0, None, None]"


def test_batched_expressions_refuse_a_table_of_another_schema():
    batched = Batched({"x": not_null(X)}, SCHEMA)
    with pytest.raises(ValueError, match="schema"):
        batched.evaluate(pa.table({"t__x": [1.0]}), AT)


_doubles = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 89.0, 90.0, -1e-300, NEGATIVE_NAN]),
)
_stamps = st.one_of(st.none(), st.integers(-(10**13), 10**12).map(lambda us: AT + timedelta(microseconds=us)))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(
            _doubles,
            st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
            st.one_of(st.none(), st.sampled_from(STRINGS[:-1]), st.text(max_size=5)),
            _stamps,
        ),
        min_size=1,
        max_size=40,
    )
)
def test_every_op_and_rule_gives_the_same_values_in_spark_and_arrow_on_generated_rows(spark, rows):
    table = pa.table(list(map(list, zip(*rows))), schema=SCHEMA)
    _assert_parity(spark, table, {**EXPRESSIONS, **RULE_EXPRESSIONS})


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (1e21, "1e21"),
        (1e-7, "1e-7"),
        (1.5e-6, "1.5e-6"),
        (1e-5, "0.00001"),
        (1e16, "1e16"),
        (9.999e15, "9999000000000000.0"),
        (-1.2345678901234568e17, "-1.2345678901234568e17"),
        (math.inf, "inf"),
        (-math.inf, "-inf"),
        (-0.0, "-0.0"),
        (True, "true"),
        (datetime(2026, 3, 1, 0, 0, 0, 120, tzinfo=UTC), "2026-03-01 00:00:00.00012"),
        (datetime(2026, 3, 1), "2026-03-01 00:00:00"),
    ],
)
def test_values_are_shown_as_the_engine_casts_them_to_text(value, shown):
    assert value_text(value) == shown
