"""On-demand features declared once: parsing and its errors, the Spark and Arrow computations of the
same definition (equal, typed as declared, as of each row's lookup time), inputs that are not
looked up, and their range and null-policy rules."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from lakehouse_ml.features.contracts import ContractError, NullPolicy, parse_contract
from lakehouse_ml.features.expressions import Col, LookupTime, days_between
from lakehouse_ml.features.expressions_arrow import to_arrow
from lakehouse_ml.features.expressions_spark import with_on_demand_features
from lakehouse_ml.features.on_demand import (
    computable,
    definitions,
    on_demand_columns,
    parse_on_demand,
)
from lakehouse_ml.features.rules import RULES, on_demand_rules, table_rules
from tests.helpers import project_config

UTC = timezone.utc
AT = datetime(2026, 3, 1, tzinfo=UTC)
SIGNUP = "customer_profile__signup_ts"
TENURE = {
    "description": "days since signup",
    "compute": {"days_between": [SIGNUP, "lookup_time"]},
    "type": "integer",
    "unit": "days",
    "range": [0, 36500],
    "null_policy": "keep",
}
PROFILE = parse_contract(
    "customer_profile",
    {
        "description": "test",
        "owner": "tests",
        "entity_keys": ["customer_id"],
        "timestamp_key": "feature_ts",
        "grain": "c",
        "refresh": "daily",
        "source": "tests",
        "kind": "changes",
        "features": {
            "signup_ts": {
                "compute": {"column": "signup_ts"},
                "unit": "timestamp",
                "freshness": "3650 days",
                "null_policy": "keep",
            }
        },
    },
)


def test_the_project_declares_tenure_from_signup_to_the_lookup_time():
    features = parse_on_demand(project_config()["parameters"]["on_demand_features"])
    tenure = features["tenure_days"]
    assert tenure.expr == days_between(Col(SIGNUP), LookupTime()) and tenure.inputs == (SIGNUP,)
    assert (tenure.type, tenure.numeric, tenure.minimum, tenure.maximum, tenure.null_policy) == (
        "integer",
        True,
        0.0,
        36500.0,
        NullPolicy("keep"),
    )


def test_features_are_in_name_order_and_a_null_removes_one():
    features = parse_on_demand({"b": TENURE, "a": {**TENURE, "type": "number"}, "gone": None})
    assert list(features) == ["a", "b"] and features["a"] != features["b"]
    assert definitions(features)["b"] == TENURE
    assert parse_on_demand(None) == {}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"compute": {"days_since": [SIGNUP]}},
            r"on_demand_features.x.compute: expected \{days_between: \[<column> \| lookup_time, <column> \| lookup_time\]\}",
        ),
        (
            {"compute": {"days_between": [SIGNUP]}},
            r"on_demand_features.x.compute.days_between: expected a list of 2 arguments, got \['customer_profile__signup_ts'\]",
        ),
        (
            {"compute": {"days_between": [SIGNUP, None]}},
            r"on_demand_features.x.compute.days_between\[1\]: expected a looked-up column \(<table>__<feature>\) or lookup_time, got None",
        ),
        ({"type": "int"}, r"on_demand_features.x.type: expected one of \['integer', 'number', 'category'\], got 'int'"),
        ({"type": None}, "on_demand_features.x.type: required"),
        ({"range": [10, 0]}, "on_demand_features.x.range: min 10 is above max 0"),
        ({"range": [0]}, r"on_demand_features.x.range: expected \[min, max\]"),
        ({"range": [0, float("inf")]}, r"on_demand_features.x.range: expected \[min, max\] of finite numbers"),
        (
            {"type": "category", "range": [0, 1]},
            "on_demand_features.x.range: a range needs type integer or number, got type category",
        ),
        (
            {"null_policy": "ignore"},
            r"on_demand_features.x.null_policy: expected keep, drop or \{impute: <value>\}, got 'ignore'",
        ),
        ({"rnage": [0, 1]}, r"on_demand_features.x: unknown keys \['rnage'\]; expected some of"),
    ],
)
def test_a_malformed_declaration_names_the_setting_and_what_was_expected(raw, message):
    with pytest.raises(ContractError, match=message):
        parse_on_demand({"x": {**TENURE, **raw}})


@pytest.mark.parametrize("name", ["customer_profile__tenure", "lookup_time"])
def test_a_name_that_looks_like_a_table_column_or_the_lookup_time_is_refused(name):
    with pytest.raises(ContractError, match=f"on_demand_features.{name}: expected a name without '__'"):
        parse_on_demand({name: TENURE})


def test_a_feature_whose_inputs_are_not_looked_up_is_left_out_with_one_warning(caplog):
    # A name no other test uses: the warning is given once per process.
    features = parse_on_demand({"probe_days": TENURE})
    with caplog.at_level(logging.WARNING, logger="lakehouse_ml.features.on_demand"):
        assert computable(features, ["customer_id", "other__x"]) == {}
        assert computable(features, ["customer_id"]) == {}
    assert [r.getMessage() for r in caplog.records if "probe_days" in r.getMessage()] == [
        "on-demand feature probe_days is left out: its inputs ['customer_profile__signup_ts'] are not looked up (a disabled "
        "table or a feature left out of training_set.lookups); remove it with on_demand_features.probe_days: null"
    ]
    assert list(computable(features, [SIGNUP])) == ["probe_days"]


SIGNUPS = [
    datetime(2025, 12, 31, 23, 59, tzinfo=UTC),
    None,
    AT,
    AT + timedelta(days=3),
    datetime(1990, 1, 1, 0, 0, 1, tzinfo=UTC),
]


def test_spark_and_arrow_compute_the_same_typed_values_as_of_each_rows_lookup_time(spark):
    features = parse_on_demand({"tenure_days": TENURE, "tenure_exact": {**TENURE, "type": "number", "range": None}})
    cutoffs = [AT, AT, AT, AT, AT - timedelta(days=1)]
    table = pa.table(
        {
            "customer_id": list("abcde"),
            SIGNUP: pa.array(SIGNUPS, pa.timestamp("us", tz="UTC")),
            "cutoff_ts": pa.array(cutoffs, pa.timestamp("us", tz="UTC")),
        }
    )
    batch = with_on_demand_features(spark.createDataFrame(table), features, "cutoff_ts").toArrow()
    assert (
        batch.schema.field("tenure_days").type == pa.int32() and batch.schema.field("tenure_exact").type == pa.float64()
    )
    assert batch.column("tenure_days").to_pylist() == [60, None, 0, -3, 13207]
    # Online: one request time for every row.
    online = on_demand_columns(table.slice(0, 4), features, AT)
    assert online["tenure_days"].type == pa.int32() and online["tenure_days"].to_pylist() == [60, None, 0, -3]
    assert online["tenure_exact"].to_pylist() == [60.0, None, 0.0, -3.0]


def test_without_their_inputs_no_column_is_added(spark):
    frame = spark.createDataFrame([("a", AT)], "customer_id string, cutoff_ts timestamp")
    assert with_on_demand_features(frame, parse_on_demand({"tenure_days": TENURE}), "cutoff_ts").columns == [
        "customer_id",
        "cutoff_ts",
    ]
    assert on_demand_columns(pa.table({"customer_id": ["a"]}), parse_on_demand({"tenure_days": TENURE}), AT) == {}


def test_range_and_null_policy_rules_judge_the_computed_value():
    features = parse_on_demand({"tenure_days": {**TENURE, "null_policy": "drop"}, "unused": TENURE})
    rules = on_demand_rules(features, ["tenure_days"], RULES, {"customer_profile": PROFILE})
    assert [(r.rule, r.where, r.expected, r.numeric_column) for r in rules] == [
        ("range", "tenure_days", "values in [0, 36500]", "tenure_days"),
        ("null_policy", "tenure_days", "a value (policy drop)", None),
    ]
    table = pa.table(
        {
            "tenure_days": pa.array([5, -5, None, None, 36501], pa.int32()),
            "customer_profile__feature_ts": pa.array([AT, AT, AT, None, AT], pa.timestamp("us", tz="UTC")),
        }
    )
    reasons = [to_arrow(rule.reason(), table, AT).to_pylist() for rule in rules]
    assert reasons == [
        [
            None,
            "tenure_days: range expected values in [0, 36500], got -5",
            None,
            None,
            "tenure_days: range expected values in [0, 36500], got 36501",
        ],
        # A missing profile row is the profile's freshness problem, reported once there.
        [None, None, "tenure_days: null_policy expected a value (policy drop), got null", None, None],
    ]


def test_table_rules_add_the_on_demand_rules_after_the_tables():
    features = parse_on_demand({"tenure_days": TENURE})
    rules = table_rules(
        {"customer_profile": PROFILE}, ["customer_profile__signup_ts", "tenure_days"], RULES, AT, features
    )
    assert [(r.rule, r.where) for r in rules][-1] == ("range", "tenure_days")
    assert [
        r.where
        for r in table_rules({"customer_profile": PROFILE}, ["customer_profile__signup_ts"], RULES, AT, features)
    ] == [
        "customer_profile.feature_ts",
        "customer_profile.signup_ts",
    ]
