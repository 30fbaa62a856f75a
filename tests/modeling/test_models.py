"""Model construction (lakehouse_ml.modeling.models): each family fits with nulls and unseen
categories; imputation and feature columns follow the contracts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lakehouse_ml.modeling.models import FAMILIES, build_model_pipeline, feature_columns


def _tiny_frame() -> pd.DataFrame:
    """Twelve rows with nulls in both kinds of feature."""
    return pd.DataFrame(
        {
            "orders": [0, 1, 2, 3, None, 5, 6, 7, 8, None, 10, 11],
            "spend": [1.0, None, 3.0, 4.0, 5.0, 6.0, 7.0, None, 9.0, 10.0, 11.0, 12.0],
            "plan": [
                "basic",
                "premium",
                None,
                "basic",
                "standard",
                "premium",
                "basic",
                None,
                "standard",
                "premium",
                "basic",
                "standard",
            ],
            "churned": [1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0],
        }
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_build_model_pipeline_fits_with_nulls_and_unseen_category(family):
    """Each family fits with nulls and predicts probabilities for a category it never saw."""
    frame = _tiny_frame()
    model = build_model_pipeline(family, {}, ["orders", "spend"], ["plan"], {"orders": 0})
    model.fit(frame[["orders", "spend", "plan"]], frame["churned"])
    unseen = pd.DataFrame({"orders": [None], "spend": [None], "plan": ["enterprise"]})
    proba = model.predict_proba(unseen)
    assert proba.shape == (1, 2) and np.isclose(proba.sum(), 1.0)
    assert ("scale" in model.named_steps) == (family == "logistic_regression")


def test_numeric_imputation_follows_the_contract_else_median():
    """orders (impute 0) fills 0; spend (no impute value) fills the median of its seen values."""
    frame = _tiny_frame()
    model = build_model_pipeline("logistic_regression", {}, ["orders", "spend"], ["plan"], {"orders": 0})
    preprocess = model.named_steps["preprocess"].fit(frame[["orders", "spend", "plan"]])
    row = preprocess.transform(pd.DataFrame({"orders": [None], "spend": [None], "plan": [None]}))[0]
    names = list(preprocess.get_feature_names_out())
    assert row[names.index("orders")] == 0
    assert row[names.index("spend")] == frame["spend"].median()
    assert row[names.index("plan_unknown")] == 1


def test_feature_columns_from_contracts_and_on_demand_features():
    """Category units are categorical, timestamps skipped, impute values kept, absent columns ignored;
    on-demand features follow, numeric or categorical by their type."""
    contract = {
        "entity_keys": ["customer_id"],
        "timestamp_key": "feature_ts",
        "ingested_at_key": "ingested_at",
        "grain": "g",
        "refresh": "daily",
        "owner": "o",
        "description": "d",
        "time_semantics": "event_time",
        "source": "s",
        "kind": "changes",
        "features": {
            "orders_7d": {
                "unit": "orders",
                "freshness": "2 days",
                "null_policy": {"impute": 0},
                "compute": {"column": "a"},
            },
            "price": {"unit": "EUR", "freshness": "2 days", "null_policy": "drop", "compute": {"column": "a"}},
            "plan": {
                "unit": "category",
                "freshness": "2 days",
                "null_policy": {"impute": "unknown"},
                "compute": {"column": "a"},
            },
            "signup_ts": {
                "unit": "timestamp",
                "freshness": "2 days",
                "null_policy": "keep",
                "compute": {"column": "a"},
            },
            "missing": {"unit": "orders", "freshness": "2 days", "null_policy": "keep", "compute": {"column": "a"}},
        },
    }
    compute = {"days_between": ["t__signup_ts", "lookup_time"]}
    on_demand = {
        "tenure_days": {"compute": compute, "type": "integer", "unit": "days", "null_policy": "keep"},
        "tenure_band": {"compute": compute, "type": "category", "unit": "band", "null_policy": {"impute": "new"}},
        "not_computed": {"compute": compute, "type": "number", "unit": "days"},
        "removed": None,
    }
    columns = ["t__orders_7d", "t__price", "t__plan", "t__signup_ts", "tenure_days", "tenure_band", "removed"]
    result = feature_columns(columns, {"t": contract}, on_demand)
    assert result == {
        "numeric": ["t__orders_7d", "t__price", "tenure_days"],
        "categorical": ["t__plan", "tenure_band"],
        "imputation": {"t__orders_7d": 0, "t__plan": "unknown", "tenure_band": "new"},
    }
    assert feature_columns(columns, {"t": contract}, None)["numeric"] == ["t__orders_7d", "t__price"]
