"""On-demand features: model inputs computed at lookup time from looked-up columns, declared once.

Each is declared under ``on_demand_features`` (``conf/<env>/parameters_on_demand_features.yml``)
with its computation, type, unit, range and null policy, and one definition computes it
everywhere: in Spark for the training set, its rebuild and batch inference
(:func:`lakehouse_ml.features.expressions_spark.with_on_demand_features`), and with Arrow for the online lookup
(:func:`on_demand_columns`), both through :mod:`lakehouse_ml.features.expressions`. Its range and
null policy are judged by :mod:`lakehouse_ml.features.rules` like a contract feature's.

``lookup_time`` is reserved: the training cutoff, the batch scoring time or the request time.
The inputs are the columns the computation names. A feature whose inputs were not looked up (a
disabled table, a feature left out of the lookups) is left out with a warning; an environment
removes one with ``<name>: null``.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lakehouse_ml.features.contracts import ContractError, FeatureContract, NullPolicy
from lakehouse_ml.features.expressions import Col, Expr, LookupTime, Op, days_between
from lakehouse_ml.features.expressions_arrow import to_arrow
from lakehouse_ml.features.tables import lookup_columns

logger = logging.getLogger(__name__)

SETTING = "on_demand_features"
LOOKUP_TIME = "lookup_time"
# type -> (Spark SQL type, Arrow type); integer and number are numeric model inputs, category categorical.
TYPES: dict[str, tuple[str, pa.DataType]] = {
    "integer": ("int", pa.int32()),
    "number": ("double", pa.float64()),
    "category": ("string", pa.string()),
}
# compute op -> (builder, number of arguments); arguments are column names or lookup_time.
COMPUTE = {"days_between": (days_between, 2)}
KEYS = ("description", "compute", "type", "unit", "range", "null_policy")
_warned: set[tuple[str, tuple[str, ...]]] = set()


@dataclass(frozen=True)
class OnDemandFeature:
    """One on-demand feature: how it is computed and what it promises."""

    name: str
    expr: Expr
    type: str  # one of TYPES
    unit: str
    null_policy: NullPolicy
    minimum: float | None = None
    maximum: float | None = None
    description: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False, hash=False)

    @property
    def inputs(self) -> tuple[str, ...]:
        """The looked-up columns the computation reads, in order of appearance."""
        return tuple(dict.fromkeys(_columns(self.expr)))

    @property
    def numeric(self) -> bool:
        """Whether the model takes it as a number (else as a category)."""
        return self.type != "category"


def _columns(expr: Expr) -> list[str]:
    if isinstance(expr, Col):
        return [expr.name]
    if isinstance(expr, Op):
        return [name for arg in expr.args for name in _columns(arg)]
    return []


def _argument(value: Any, where: str) -> Expr:
    if value == LOOKUP_TIME:
        return LookupTime()
    if isinstance(value, str) and value:
        return Col(value)
    raise ContractError(f"{where}: expected a looked-up column (<table>__<feature>) or {LOOKUP_TIME}, got {value!r}")


def _compute(raw: Any, where: str) -> Expr:
    shapes = " or ".join(
        f"{{{op}: [{', '.join(['<column> | lookup_time'] * arity)}]}}" for op, (_, arity) in COMPUTE.items()
    )
    if not isinstance(raw, Mapping) or len(raw) != 1 or next(iter(raw)) not in COMPUTE:
        raise ContractError(f"{where}: expected {shapes}, got {raw!r}")
    op, args = next(iter(raw.items()))
    build, arity = COMPUTE[op]
    if not isinstance(args, (list, tuple)) or len(args) != arity:
        raise ContractError(f"{where}.{op}: expected a list of {arity} arguments, got {args!r}")
    return build(*(_argument(arg, f"{where}.{op}[{n}]") for n, arg in enumerate(args)))


def _bounds(raw: Any, kind: str, where: str) -> tuple[float | None, float | None]:
    if raw is None:
        return None, None
    if kind == "category":
        raise ContractError(f"{where}: a range needs type integer or number, got type {kind}")
    if not isinstance(raw, (list, tuple)) or len(raw) != 2:
        raise ContractError(f"{where}: expected [min, max] (null for an open end), got {raw!r}")
    bounds = []
    for value in raw:
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
        ):
            raise ContractError(f"{where}: expected [min, max] of finite numbers (null for an open end), got {raw!r}")
        bounds.append(None if value is None else float(value))
    if None not in bounds and bounds[0] > bounds[1]:
        raise ContractError(f"{where}: min {bounds[0]:g} is above max {bounds[1]:g}")
    return bounds[0], bounds[1]


def parse_feature(name: str, raw: Any) -> OnDemandFeature:
    """One declaration, checked; errors name ``on_demand_features.<name>.<key>`` and what was expected."""
    where = f"{SETTING}.{name}"
    if "__" in name or name == LOOKUP_TIME:
        raise ContractError(
            f"{where}: expected a name without '__' (feature tables' columns are <table>__<feature>) and not {LOOKUP_TIME}"
        )
    if not isinstance(raw, Mapping):
        raise ContractError(f"{where}: expected a mapping with keys {list(KEYS)}, got {raw!r}")
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise ContractError(f"{where}: unknown keys {unknown}; expected some of {list(KEYS)}")
    for key in ("compute", "type", "unit"):
        if raw.get(key) in (None, ""):
            raise ContractError(f"{where}.{key}: required")
    kind = raw["type"]
    if kind not in TYPES:
        raise ContractError(f"{where}.type: expected one of {list(TYPES)}, got {kind!r}")
    minimum, maximum = _bounds(raw.get("range"), kind, f"{where}.range")
    return OnDemandFeature(
        name=name,
        expr=_compute(raw["compute"], f"{where}.compute"),
        type=kind,
        unit=str(raw["unit"]),
        null_policy=NullPolicy.parse(raw.get("null_policy", "keep"), where),
        minimum=minimum,
        maximum=maximum,
        description=str(raw.get("description") or ""),
        raw=copy.deepcopy(dict(raw)),
    )


def parse_on_demand(raw: Mapping[str, Any] | None) -> dict[str, OnDemandFeature]:
    """The declared on-demand features in name order (the order of the model's inputs); an
    environment's ``<name>: null`` removes one."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ContractError(f"{SETTING}: expected a mapping of feature name to its definition, got {raw!r}")
    return {str(name): parse_feature(str(name), spec) for name, spec in sorted(raw.items()) if spec is not None}


def computable(features: Mapping[str, OnDemandFeature], columns: Iterable[str]) -> dict[str, OnDemandFeature]:
    """The features whose inputs are all among ``columns``; the others are left out, each with one warning."""
    present = set(columns)
    kept = {}
    for name, feature in features.items():
        missing = tuple(column for column in feature.inputs if column not in present)
        if not missing:
            kept[name] = feature
        elif (name, missing) not in _warned:
            _warned.add((name, missing))
            logger.warning(
                "on-demand feature %s is left out: its inputs %s are not looked up (a disabled table or a feature "
                "left out of training_set.lookups); remove it with %s.%s: null",
                name,
                list(missing),
                SETTING,
                name,
            )
    return kept


def definitions(features: Mapping[str, OnDemandFeature]) -> dict[str, dict[str, Any]]:
    """The declarations as configured, for a training set's spec (a changed definition rewrites it)."""
    return {name: feature.raw for name, feature in features.items()}


def on_demand_columns(
    table: pa.Table, features: Mapping[str, OnDemandFeature], lookup_time: datetime
) -> dict[str, pa.Array]:
    """Each computable feature over the looked-up rows of ``table`` as of ``lookup_time`` (online)."""
    usable = computable(features, table.column_names)
    return {name: pc.cast(to_arrow(f.expr, table, lookup_time), TYPES[f.type][1]) for name, f in usable.items()}


def looked_up_on_demand(
    contracts: Mapping[str, FeatureContract], lookups: Mapping[str, Any], on_demand_features: Mapping[str, Any] | None
) -> dict[str, OnDemandFeature]:
    """The declared on-demand features whose inputs the resolved lookups give."""
    return computable(parse_on_demand(on_demand_features), lookup_columns(contracts, lookups))
