"""Feature contracts: what a feature table promises, declared in ``conf/<env>/feature_tables/``.

A contract states the table's keys, timestamp, grain, owner, refresh schedule and, per feature,
its window, unit, allowed freshness, time semantics, null policy and expected range or allowed
values. It is parsed and checked here once; the features pipeline writes it into the Delta table
(column comments and table properties) and records its hash with every table version.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

TIME_SEMANTICS = ("event_time", "ingestion_time")
# The Delta table property a run reads to record which contract built the table it reads.
CONTRACT_HASH_PROPERTY = "lakehouse_ml.contract.hash"
# How a table's rows are computed from its source (pipelines/features/kinds.py), and the ``compute``
# keys each kind understands:
# - daily_windows: trailing windows of whole days over a daily table (``activity_date``,
#   ``last_delivered_at``): ``{sum: c[, divide_by: n]}``, ``{days_since: c}`` (both need ``window``)
#   or ``{ratio: [feature, feature]}`` of two features of the same table;
# - changes: one row per change of an entity's silver rows, valid from its ``event_ts``:
#   ``{column: c}``.
KIND_COMPUTE = {
    "daily_windows": ({"sum"}, {"sum", "divide_by"}, {"days_since"}, {"ratio"}),
    "changes": ({"column"},),
}
_DURATION = re.compile(r"^\s*(\d+)\s*(day|days|hour|hours|minute|minutes)\s*$")


class ContractError(ValueError):
    """A feature contract in the configuration is incomplete or inconsistent."""


def parse_duration(text: str | None, where: str) -> timedelta | None:
    """Parse ``"7 days"``/``"12 hours"``/``"30 minutes"``; ``None`` stays ``None``."""
    if text is None:
        return None
    match = _DURATION.match(str(text))
    if not match:
        raise ContractError(f"{where}: expected a duration like '7 days' or '12 hours', got {text!r}")
    amount, unit = int(match.group(1)), match.group(2).rstrip("s")
    return timedelta(**{f"{unit}s": amount})


@dataclass(frozen=True)
class NullPolicy:
    """What to do with a NULL feature value: keep it, impute a named value, or drop the row."""

    action: str  # keep | impute | drop
    value: Any = None

    @classmethod
    def parse(cls, raw: Any, where: str) -> NullPolicy:
        """Accept ``keep``, ``drop`` or ``{impute: <value>}``."""
        if raw in ("keep", "drop"):
            return cls(raw)
        if isinstance(raw, dict) and set(raw) == {"impute"}:
            return cls("impute", raw["impute"])
        raise ContractError(f"{where}.null_policy: expected keep, drop or {{impute: <value>}}, got {raw!r}")


@dataclass(frozen=True)
class FeatureSpec:
    """One feature's promises."""

    name: str
    unit: str
    freshness: timedelta
    null_policy: NullPolicy
    time_semantics: str
    window: timedelta | None = None
    minimum: float | None = None
    maximum: float | None = None
    allowed_values: tuple[Any, ...] | None = None
    computation: str = ""
    compute: dict[str, Any] = field(default_factory=dict, hash=False)

    def describe(self) -> str:
        """A one-line description for the Delta column comment."""
        parts = [self.computation or self.name, f"unit={self.unit}"]
        if self.window is not None:
            parts.append(f"window={format_duration(self.window)}")
        parts.append(f"freshness={format_duration(self.freshness)}")
        parts.append(
            f"nulls={self.null_policy.action}"
            + (f"({self.null_policy.value})" if self.null_policy.action == "impute" else "")
        )
        if self.allowed_values is not None:
            parts.append(f"allowed={list(self.allowed_values)}")
        if self.minimum is not None or self.maximum is not None:
            low = "-inf" if self.minimum is None else f"{self.minimum:g}"
            high = "inf" if self.maximum is None else f"{self.maximum:g}"
            parts.append(f"range=[{low}, {high}]")
        return "; ".join(parts)


@dataclass(frozen=True)
class FeatureContract:
    """A feature table's contract."""

    table: str
    enabled: bool
    description: str
    owner: str
    entity_keys: tuple[str, ...]
    timestamp_key: str
    ingested_at_key: str | None
    grain: str
    refresh: str
    source: str
    kind: str
    features: tuple[FeatureSpec, ...]
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def feature_names(self) -> list[str]:
        """The features, in declaration order."""
        return [spec.name for spec in self.features]

    @property
    def hash(self) -> str:
        """A stable hash of the table name and its whole declared contract (key order ignored)."""
        canonical = json.dumps(
            {"table": self.table, "contract": self.raw}, sort_keys=True, default=str, separators=(",", ":")
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def feature(self, name: str) -> FeatureSpec:
        """Return a feature's spec by name."""
        for spec in self.features:
            if spec.name == name:
                return spec
        raise KeyError(f"feature table '{self.table}' has no feature {name!r}")

    def table_properties(self) -> dict[str, str]:
        """Delta table properties that carry the contract with the table."""
        return {
            "lakehouse_ml.contract.table": self.table,
            CONTRACT_HASH_PROPERTY: self.hash,
            "lakehouse_ml.contract.owner": self.owner,
            "lakehouse_ml.contract.entity_keys": ",".join(self.entity_keys),
            "lakehouse_ml.contract.timestamp_key": self.timestamp_key,
            "lakehouse_ml.contract.grain": self.grain,
            "lakehouse_ml.contract.refresh": self.refresh,
            "lakehouse_ml.contract.description": self.description,
            # Per-feature promises as properties too: one commit stamps the whole contract
            # (delta-rs sets column comments one commit per column).
            **{f"lakehouse_ml.feature.{name}": text for name, text in self.column_comments().items()},
        }

    def column_comments(self) -> dict[str, str]:
        """One comment per feature column, describing its promises."""
        return {spec.name: spec.describe() for spec in self.features}

    def as_record(self) -> dict[str, Any]:
        """A JSON-able view (for MLflow and audit tables)."""
        record = asdict(self)
        record.pop("raw")
        record["hash"] = self.hash
        return json.loads(json.dumps(record, default=str))


def format_duration(value: timedelta) -> str:
    """``7d``, ``12h`` or ``30m``: the largest unit that divides the duration."""
    for unit, size in (("d", timedelta(days=1)), ("h", timedelta(hours=1)), ("m", timedelta(minutes=1))):
        if value % size == timedelta(0):
            return f"{value // size}{unit}"
    return f"{int(value.total_seconds())}s"


def _names(raw: Any, where: str) -> tuple[Any, ...]:
    """A YAML list as a tuple; a bare string would silently become its characters."""
    if not isinstance(raw, (list, tuple)) or not raw:
        raise ContractError(f"{where}: expected a non-empty list, got {raw!r}")
    return tuple(raw)


def _bound(value: Any, where: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ContractError(f"{where}: range bounds must be numbers or null, got {value!r}") from None


def _require(raw: dict[str, Any], key: str, where: str) -> Any:
    if raw.get(key) in (None, "", []):
        raise ContractError(f"{where}: '{key}' is required")
    return raw[key]


FEATURE_KEYS = {
    "window",
    "unit",
    "freshness",
    "null_policy",
    "time_semantics",
    "range",
    "allowed_values",
    "computation",
    "compute",
}


def _parse_feature(name: str, raw: dict[str, Any], default_semantics: str, where: str) -> FeatureSpec:
    where = f"{where}.features.{name}"
    unknown = sorted(set(raw) - FEATURE_KEYS)
    if unknown:
        # Catches typos, and YAML flow mappings split by an unquoted comma in a description.
        raise ContractError(f"{where}: unknown keys {unknown}; expected some of {sorted(FEATURE_KEYS)}")
    semantics = raw.get("time_semantics", default_semantics)
    if semantics not in TIME_SEMANTICS:
        raise ContractError(f"{where}.time_semantics: expected one of {TIME_SEMANTICS}, got {semantics!r}")
    bounds = raw.get("range")
    if bounds is not None and (not isinstance(bounds, (list, tuple)) or len(bounds) != 2):
        raise ContractError(f"{where}.range: expected [min, max] (null for open), got {bounds!r}")
    minimum, maximum = (_bound(b, f"{where}.range") for b in (bounds or (None, None)))
    if minimum is not None and maximum is not None and minimum > maximum:
        raise ContractError(f"{where}.range: min {minimum:g} is above max {maximum:g}")
    allowed = raw.get("allowed_values")
    compute = _require(raw, "compute", where)
    if not isinstance(compute, dict):
        raise ContractError(f"{where}.compute: expected a mapping like {{sum: orders}}, got {compute!r}")
    return FeatureSpec(
        name=name,
        unit=str(_require(raw, "unit", where)),
        freshness=parse_duration(_require(raw, "freshness", where), f"{where}.freshness"),
        null_policy=NullPolicy.parse(_require(raw, "null_policy", where), where),
        time_semantics=semantics,
        window=parse_duration(raw.get("window"), f"{where}.window"),
        minimum=minimum,
        maximum=maximum,
        allowed_values=_names(allowed, f"{where}.allowed_values") if allowed is not None else None,
        computation=str(raw.get("computation", "")),
        compute=dict(compute),
    )


def _check_compute(spec: FeatureSpec, kind: str, names: set[str], where: str) -> None:
    """A feature's ``compute`` must be one its table's kind knows, over what that kind reads."""
    where = f"{where}.features.{spec.name}.compute"
    if set(spec.compute) not in KIND_COMPUTE[kind]:
        shapes = " or ".join(str(sorted(keys)) for keys in KIND_COMPUTE[kind])
        raise ContractError(f"{where}: a '{kind}' table computes features from keys {shapes}, got {spec.compute}")
    if "ratio" in spec.compute:
        parts = spec.compute["ratio"]
        if not isinstance(parts, (list, tuple)) or len(parts) != 2 or not set(parts) <= names - {spec.name}:
            raise ContractError(
                f"{where}.ratio: expected [numerator, denominator], two other features of the table, got {parts!r}"
            )
    elif kind == "daily_windows" and spec.window is None:
        raise ContractError(f"{where}: a '{kind}' feature needs a `window` (e.g. 30 days)")


def parse_contract(table: str, raw: dict[str, Any]) -> FeatureContract:
    """Parse and check one table's contract; errors name the table and the offending key."""
    where = f"feature_tables/{table}.yml: {table}"
    if not isinstance(raw, dict):
        raise ContractError(f"{where}: expected a mapping, got {type(raw).__name__}")
    raw = copy.deepcopy(raw)  # the hash must not change if the caller's dict does
    features = _require(raw, "features", where)
    if not isinstance(features, dict):
        raise ContractError(f"{where}.features: expected a mapping of feature name to promises")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ContractError(f"{where}.enabled: expected true or false, got {enabled!r}")
    semantics = raw.get("time_semantics", "event_time")
    kind = _require(raw, "kind", where)
    if kind not in KIND_COMPUTE:
        raise ContractError(f"{where}.kind: expected one of {sorted(KIND_COMPUTE)}, got {kind!r}")
    # An environment drops a base feature with `<feature>: null`.
    specs = tuple(_parse_feature(name, spec, semantics, where) for name, spec in features.items() if spec is not None)
    if not specs:
        raise ContractError(f"{where}.features: every feature is null; declare at least one or disable the table")
    for spec in specs:
        _check_compute(spec, kind, {s.name for s in specs}, where)
    return FeatureContract(
        table=table,
        enabled=enabled,
        description=str(_require(raw, "description", where)),
        owner=str(_require(raw, "owner", where)),
        entity_keys=_names(_require(raw, "entity_keys", where), f"{where}.entity_keys"),
        timestamp_key=str(_require(raw, "timestamp_key", where)),
        ingested_at_key=raw.get("ingested_at_key"),
        grain=str(_require(raw, "grain", where)),
        refresh=str(_require(raw, "refresh", where)),
        source=str(_require(raw, "source", where)),
        kind=kind,
        features=specs,
        raw=raw,
    )
