"""Contract rules on feature values, written once: range, allowed values, null policy, freshness.

Each rule is one :class:`Rule`: what it promises in words (``expected``), when a row breaks it
(``breaks``) and how the offending value is shown (``got``), the last two as expressions of
:mod:`lakehouse_ml.features.expressions`. Batch inference compiles them to Spark columns, the
online lookup to Arrow arrays, and the features pipeline's validation uses their conditions over
a staged table; serving's request bounds use the same spec and :func:`bounds_text`. Every
reason reads ``<table>.<feature>: <rule> expected <expected>, got <value>``. On-demand features
(:mod:`lakehouse_ml.features.on_demand`) have range and null-policy rules too, read as
``<name>: <rule> expected ...``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lakehouse_ml.features.contracts import FeatureContract, FeatureSpec, format_duration
from lakehouse_ml.features.expressions import (
    Col,
    Expr,
    Lit,
    age_days,
    and_,
    concat,
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
from lakehouse_ml.features.on_demand import OnDemandFeature

RULES = ("range", "allowed_values", "null_policy", "freshness")


@dataclass(frozen=True)
class Rule:
    """One promise on the judged rows and how a row that breaks it is reported."""

    rule: str  # one of RULES
    where: str  # "<table>.<feature>" (or the table's timestamp key for a missing row)
    expected: str  # the promise in words: "values in [0, 89]", "one of [...]", ...
    breaks: Expr  # true where a row breaks the promise
    got: Expr  # the offending value as text
    numeric_column: str | None = None  # the rule applies only where this column is numeric

    def reason(self) -> Expr:
        """:func:`reason_text` with the offending value where the row breaks the rule, else null."""
        return when(self.breaks, concat(Lit(reason_text(self.where, self.rule, self.expected, "")), self.got))


def reason_text(where: str, rule: str, expected: str, got: str) -> str:
    """The one wording of a broken promise: ``<where>: <rule> expected <expected>, got <got>``."""
    return f"{where}: {rule} expected {expected}, got {got}"


def feature_column(table: str, feature: str) -> str:
    """The column a feature has in the training set and the scoring rows: ``<table>__<feature>``."""
    return f"{table}__{feature}"


def number_text(value: float | None) -> str:
    """A number for a message: integral values without a trailing ``.0``."""
    if value is None:
        return "null"
    value = float(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def bounds_text(minimum: float | None, maximum: float | None) -> str:
    """Declared bounds in words: ``in [0, 89]``, ``>= 0``, ``<= 1000``; empty when unbounded."""
    if minimum is not None and maximum is not None:
        return f"in [{number_text(minimum)}, {number_text(maximum)}]"
    if minimum is not None:
        return f">= {number_text(minimum)}"
    return f"<= {number_text(maximum)}" if maximum is not None else ""


# What the value rules read of a promise: a contract feature's or an on-demand feature's.
Promise = FeatureSpec | OnDemandFeature


def range_text(spec: Promise) -> str:
    """A feature's declared range in words (``values in [0, 89]``)."""
    return f"values {bounds_text(spec.minimum, spec.maximum)}"


def allowed_values(spec: FeatureSpec) -> tuple[Any, ...] | None:
    """The values a feature may take (a declared null is no value), None when not restricted."""
    if spec.allowed_values is None:
        return None
    return tuple(value for value in spec.allowed_values if value is not None)


def requires_value(spec: Promise) -> bool:
    """Whether a null breaks the feature's null policy (``drop``)."""
    return spec.null_policy.action == "drop"


def range_rule(spec: Promise, column: str, where: str) -> Rule | None:
    """A non-null value outside the declared bounds (NaN breaks any range); None without a range."""
    if spec.minimum is None and spec.maximum is None:
        return None
    value = Col(column)
    outside = [is_nan(value)]
    if spec.minimum is not None:
        outside.append(lt(value, Lit(spec.minimum)))
    if spec.maximum is not None:
        outside.append(gt(value, Lit(spec.maximum)))
    return Rule(
        "range", where, range_text(spec), and_(not_null(value), or_(*outside)), text(value), numeric_column=column
    )


def allowed_values_rule(spec: FeatureSpec, column: str, where: str) -> Rule | None:
    """A non-null value not among the allowed values; None when the values are not restricted."""
    allowed = allowed_values(spec)
    if allowed is None:
        return None
    value = Col(column)
    return Rule(
        "allowed_values",
        where,
        f"one of {list(spec.allowed_values or ())}",
        and_(not_null(value), not_(is_in(value, allowed))),
        concat(Lit("'"), text(value), Lit("'")),
    )


def null_policy_rule(spec: FeatureSpec, column: str, where: str, stamp: str) -> Rule | None:
    """A null in a feature row whose null policy is ``drop``; None for other policies."""
    if not requires_value(spec):
        return None
    # A missing feature row (null stamp) is reported once, by the freshness rule.
    return Rule(
        "null_policy", where, "a value (policy drop)", and_(not_null(Col(stamp)), is_null(Col(column))), Lit("null")
    )


def freshness_rules(
    contract: FeatureContract, used: Iterable[FeatureSpec], stamp: str, lookup_time: datetime
) -> list[Rule]:
    """No feature row of the table, or one older than the tightest freshness of the used features."""
    tightest = min(used, key=lambda spec: spec.freshness)
    allowed, at = format_duration(tightest.freshness), lookup_time.isoformat()
    row = Col(stamp)
    return [
        Rule(
            "freshness",
            f"{contract.table}.{contract.timestamp_key}",
            f"a feature row at most {allowed} old at {at}",
            is_null(row),
            Lit("none"),
        ),
        Rule(
            "freshness",
            f"{contract.table}.{tightest.name}",
            f"at most {allowed} old at {at}",
            older_than(row, tightest.freshness),
            concat(text(age_days(row)), Lit(" days")),
        ),
    ]


def feature_rules(
    contract: FeatureContract,
    used: list[FeatureSpec],
    rules: Iterable[str],
    lookup_time: datetime,
    column: Callable[[str, str], str] = feature_column,
) -> list[Rule]:
    """The selected rules over a table's used features: freshness first, then per feature range,
    allowed values and null policy. ``column(table, feature)`` names the judged columns."""
    selected = set(rules)
    stamp = column(contract.table, contract.timestamp_key)
    found: list[Rule | None] = []
    if "freshness" in selected:
        found += freshness_rules(contract, used, stamp, lookup_time)
    for spec in used:
        name, where = column(contract.table, spec.name), f"{contract.table}.{spec.name}"
        if "range" in selected:
            found.append(range_rule(spec, name, where))
        if "allowed_values" in selected:
            found.append(allowed_values_rule(spec, name, where))
        if "null_policy" in selected:
            found.append(null_policy_rule(spec, name, where, stamp))
    return [rule for rule in found if rule is not None]


def on_demand_rules(
    features: Mapping[str, OnDemandFeature],
    inputs: Iterable[str],
    rules: Iterable[str],
    contracts: Mapping[str, FeatureContract],
) -> list[Rule]:
    """Range and null policy of the on-demand features among the model's ``inputs``. They have no
    freshness of their own: they are computed at the lookup time from rows judged by their tables."""
    wanted, selected = set(inputs), set(rules)
    found: list[Rule | None] = []
    for name, feature in features.items():
        if name not in wanted:
            continue
        if "range" in selected:
            found.append(range_rule(feature, name, name))
        if "null_policy" in selected and requires_value(feature):
            # As for a contract feature, a missing input row is reported by its table's freshness rule.
            rows = [not_null(Col(stamp)) for stamp in _input_stamps(feature, contracts)]
            found.append(
                Rule("null_policy", name, "a value (policy drop)", and_(*rows, is_null(Col(name))), Lit("null"))
            )
    return [rule for rule in found if rule is not None]


def _input_stamps(feature: OnDemandFeature, contracts: Mapping[str, FeatureContract]) -> list[str]:
    """The timestamp columns of the tables whose looked-up columns the feature reads."""
    stamps = []
    for column in feature.inputs:
        table = column.partition("__")[0]
        if table in contracts and column != table:
            stamps.append(feature_column(table, contracts[table].timestamp_key))
    return list(dict.fromkeys(stamps))


def table_rules(
    contracts: Mapping[str, FeatureContract],
    inputs: Iterable[str],
    rules: Iterable[str],
    lookup_time: datetime,
    on_demand: Mapping[str, OnDemandFeature] | None = None,
) -> list[Rule]:
    """The selected rules of every enabled table whose features are among the model's ``inputs``,
    then those of the on-demand features among them."""
    wanted, selected = set(inputs), list(rules)
    found: list[Rule] = []
    for table, contract in contracts.items():
        used = [spec for spec in contract.features if feature_column(table, spec.name) in wanted]
        if contract.enabled and used:
            found += feature_rules(contract, used, selected, lookup_time)
    return found + on_demand_rules(on_demand or {}, wanted, selected, contracts)
