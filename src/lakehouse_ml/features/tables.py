"""The declared feature tables and the point-in-time lookups they answer, for every stage.

Every table declared under ``conf/<env>/feature_tables/`` (one parameter, ``feature_tables``) is a
feature table: built by the features pipeline, looked up by the training set, batch inference and
the online store, with no table named in code. The tables are taken in name order: Kedro merges
the files of a folder in no fixed order, and the order of the tables is the order of the model's
input columns.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from lakehouse_ml.features.contracts import ContractError, FeatureContract, parse_contract
from lakehouse_ml.features.feature_lookup import FeatureLookup

logger = logging.getLogger(__name__)

LOOKUP_KEYS = ("features", "lookback_window", "filter_by_ingested_at")
# The entity every spine, scoring request and online vector is keyed by; a training set row's
# time (features are looked up as of it) and its label.
ENTITY, CUTOFF, LABEL = "customer_id", "cutoff_ts", "churned"
# The training set table's property holding its spec: what rebuilds it exactly, and what training reads back.
SPEC_PROPERTY = "lakehouse_ml.training_set.spec"


def contract_configs(feature_tables: Mapping[str, Any] | None) -> dict[str, Any]:
    """The raw contracts of ``params:feature_tables`` in name order (an env's ``<table>: null`` drops a table)."""
    return {name: config for name, config in sorted((feature_tables or {}).items()) if config is not None}


def parsed_contracts(feature_tables: Mapping[str, Any] | None) -> dict[str, FeatureContract]:
    """Every declared table's parsed contract, enabled or not, in name order."""
    return {name: parse_contract(name, config) for name, config in contract_configs(feature_tables).items()}


def resolve_lookups(
    contracts: Mapping[str, FeatureContract], training_set: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """The lookup of every enabled table: ``training_set.lookup_defaults`` overridden per table by
    ``training_set.lookups.<table>``; ``lookups.<table>: null`` leaves a table out of the model.

    This is what the training set records in its spec and what inference and the online store
    look up, so the three agree by construction.
    """
    defaults = _mapping(training_set.get("lookup_defaults"), "training_set.lookup_defaults")
    if defaults.get("features") is not None:
        raise ContractError(
            "training_set.lookup_defaults.features: expected null (every feature of each table); "
            "choose features per table in training_set.lookups.<table>.features"
        )
    overrides = _mapping(training_set.get("lookups"), "training_set.lookups")
    unknown = sorted(set(overrides) - set(contracts))
    if unknown:
        raise ContractError(
            f"training_set.lookups: {unknown} are not declared feature tables (conf/<env>/feature_tables/): "
            f"declared are {sorted(contracts)}"
        )
    resolved = {}
    for name, contract in contracts.items():
        if not contract.enabled:
            logger.info("feature table %s is disabled by its contract; not looked up", name)
            continue
        if name in overrides and overrides[name] is None:
            logger.info("feature table %s: training_set.lookups.%s is null; not looked up", name, name)
            continue
        if list(contract.entity_keys) != [ENTITY]:
            # Spines, scoring requests and the online store are keyed by one entity.
            raise ContractError(
                f"feature_tables.{name}.entity_keys: the training set looks tables up by [{ENTITY}], "
                f"got {list(contract.entity_keys)}"
            )
        where = f"training_set.lookups.{name}"
        config = {**defaults, **_mapping(overrides.get(name), where)}
        extra = sorted(set(config) - set(LOOKUP_KEYS))
        if extra:
            raise ContractError(
                f"{where} (over lookup_defaults): unknown keys {extra}; expected some of {list(LOOKUP_KEYS)}"
            )
        missing = sorted(set(config.get("features") or ()) - set(contract.feature_names))
        if missing:
            raise ContractError(
                f"{where}.features: {missing} are not features of the table (its contract declares {contract.feature_names})"
            )
        # Recorded as concrete names: the training set's spec then says exactly what it read.
        resolved[name] = {
            **{key: config.get(key) for key in LOOKUP_KEYS},
            "features": list(config.get("features") or contract.feature_names),
        }
    return resolved


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ContractError(f"{where}: expected a mapping, got {value!r}")
    return dict(value)


def feature_lookups(
    tables: Mapping[str, Any], contracts: Mapping[str, FeatureContract], lookups: Mapping[str, Any]
) -> list[FeatureLookup]:
    """One ``FeatureLookup`` per resolved lookup (see :func:`resolve_lookups`), with its chosen row's
    times for the guards; ``tables`` maps a table name to its rows (or anything a lookup can read)."""
    result = []
    for name, config in lookups.items():
        contract = contracts[name]
        names = config.get("features") or contract.feature_names
        window = config.get("lookback_window") or freshness(contract, names)
        result.append(
            FeatureLookup(
                source=tables[name],
                feature_names=[*names, contract.timestamp_key, contract.ingested_at_key],
                lookup_key=list(contract.entity_keys),
                timestamp_key=contract.timestamp_key,
                lookback_window=window,
                ingested_at_key=contract.ingested_at_key,
                filter_by_ingested_at=bool(config.get("filter_by_ingested_at", True)),
                prefix=f"{name}__",
                name=name,
            )
        )
    return result


def lookup_columns(contracts: Mapping[str, FeatureContract], lookups: Mapping[str, Any]) -> list[str]:
    """The columns the resolved lookups add to a spine (what on-demand features can read)."""
    return [
        column
        for lookup in feature_lookups({name: name for name in lookups}, contracts, lookups)
        for column in lookup.output_columns()
    ]


def freshness(contract: FeatureContract, names: list[str]) -> timedelta:
    """The tightest allowed freshness among the looked-up features: older rows are too stale."""
    return min(contract.feature(n).freshness for n in names)
