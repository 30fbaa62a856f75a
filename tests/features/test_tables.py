"""Declared feature tables and their resolved lookups: defaults, overrides, removals and refusals."""

from __future__ import annotations

import copy

import pytest

from lakehouse_ml.features.contracts import ContractError
from lakehouse_ml.features.tables import contract_configs, feature_lookups, parsed_contracts, resolve_lookups
from tests.helpers import merged_parameters

DEFAULTS = {"features": None, "lookback_window": None, "filter_by_ingested_at": True}


@pytest.fixture(scope="module")
def declared() -> dict:
    return merged_parameters()["feature_tables"]


def _resolve(tables: dict, **training_set) -> dict:
    return resolve_lookups(parsed_contracts(tables), {"lookup_defaults": DEFAULTS, **training_set})


def test_tables_come_in_name_order_and_a_null_table_is_dropped(declared):
    tables = {"zeta": declared["customer_activity"], **declared, "gone": None}
    assert list(contract_configs(tables)) == ["customer_activity", "customer_profile", "zeta"]


def test_every_enabled_table_is_looked_up_with_the_defaults_and_concrete_feature_names(declared):
    contracts = parsed_contracts(declared)
    resolved = _resolve(declared)
    assert list(resolved) == ["customer_activity", "customer_profile"]
    assert resolved["customer_profile"] == {**DEFAULTS, "features": contracts["customer_profile"].feature_names}
    lookups = feature_lookups({name: name for name in resolved}, contracts, resolved)
    assert [lookup.name for lookup in lookups] == ["customer_activity", "customer_profile"]
    assert lookups[0].prefix == "customer_activity__" and lookups[0].filter_by_ingested_at


def test_overrides_narrow_one_table_and_null_or_disabled_leaves_it_out(declared):
    narrowed = _resolve(
        declared, lookups={"customer_activity": {"features": ["orders_30d"], "lookback_window": "3 days"}}
    )
    assert narrowed["customer_activity"] == {
        "features": ["orders_30d"],
        "lookback_window": "3 days",
        "filter_by_ingested_at": True,
    }
    assert list(_resolve(declared, lookups={"customer_profile": None})) == ["customer_activity"]
    disabled = copy.deepcopy(declared)
    disabled["customer_profile"]["enabled"] = False
    assert list(_resolve(disabled)) == ["customer_activity"]


@pytest.mark.parametrize(
    ("training_set", "message"),
    [
        ({"lookups": {"nope": {}}}, r"training_set.lookups: \['nope'\] are not declared feature tables"),
        (
            {"lookups": {"customer_activity": {"features": ["nope"]}}},
            r"training_set.lookups.customer_activity.features: \['nope'\] are not features",
        ),
        (
            {"lookups": {"customer_activity": {"window": "3 days"}}},
            r"training_set.lookups.customer_activity \(over lookup_defaults\): unknown keys \['window'\]",
        ),
        (
            {"lookups": {"customer_activity": ["orders_30d"]}},
            r"training_set.lookups.customer_activity: expected a mapping",
        ),
        (
            {"lookup_defaults": {**DEFAULTS, "features": ["orders_30d"]}},
            r"training_set.lookup_defaults.features: expected null",
        ),
        ({"lookups": "all"}, r"training_set.lookups: expected a mapping"),
    ],
)
def test_bad_lookup_settings_are_refused_naming_the_setting(declared, training_set, message):
    with pytest.raises(ContractError, match=message):
        _resolve(declared, **training_set)


def test_a_table_keyed_by_another_entity_is_refused_naming_its_keys(declared):
    tables = copy.deepcopy(declared)
    tables["customer_profile"]["entity_keys"] = ["account_id"]
    with pytest.raises(
        ContractError,
        match=r"feature_tables.customer_profile.entity_keys: the training set looks tables up by \[customer_id\]",
    ):
        _resolve(tables)
