"""The compiled (numpy) scoring path equals the pipeline it was compiled from, or is refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from lakehouse_ml.modeling.compiled import check_rows, compile_pipeline
from lakehouse_ml.modeling.models import build_model_pipeline

NUMERIC = ["orders_30d", "days_since_last_order", "price"]
CATEGORICAL = ["plan_tier", "country"]
IMPUTATION = {"orders_30d": 0, "days_since_last_order": 999}  # price: median


def _rows(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "orders_30d": rng.poisson(2, n).astype(float),
            "days_since_last_order": rng.integers(0, 90, n).astype(float),
            "price": rng.normal(20, 5, n),
            "plan_tier": rng.choice(["basic", "standard", "premium"], n).astype(object),
            "country": rng.choice(["DE", "FR", "PL"], n).astype(object),
        }
    )
    frame.loc[frame.index % 7 == 0, "price"] = np.nan
    frame.loc[frame.index % 11 == 0, "country"] = None
    return frame


@pytest.mark.parametrize(
    "family",
    [
        "logistic_regression",
        pytest.param("hist_gradient_boosting", marks=pytest.mark.slow),
        "random_forest",
    ],  # ~5 s fitting
)
def test_the_compiled_path_scores_exactly_as_the_pipeline(family):
    train = _rows(400, seed=1)
    labels = (train["orders_30d"] < 2).astype(int)
    params = {"n_estimators": 10} if family == "random_forest" else {}
    pipeline = build_model_pipeline(family, params, NUMERIC, CATEGORICAL, IMPUTATION).fit(train, labels)
    compiled = compile_pipeline(pipeline, NUMERIC + CATEGORICAL)
    assert compiled is not None
    fresh = _rows(50, seed=2)
    fresh.loc[0, ["orders_30d", "plan_tier"]] = [np.nan, "enterprise"]  # an imputed value and an unseen category
    assert np.abs(compiled.predict_proba(fresh) - pipeline.predict_proba(fresh)).max() <= 1e-12


def test_the_check_rows_cover_every_category_null_and_unseen_value():
    train = _rows(100, seed=3)
    pipeline = build_model_pipeline("logistic_regression", {}, NUMERIC, CATEGORICAL, IMPUTATION).fit(
        train, train["orders_30d"] > 1
    )
    rows = check_rows(compile_pipeline(pipeline, NUMERIC + CATEGORICAL), NUMERIC + CATEGORICAL)
    assert set(rows["plan_tier"].dropna()) == {"basic", "standard", "premium", "__unseen__"}
    assert set(rows["country"].dropna()) == {
        "DE",
        "FR",
        "PL",
        "unknown",
        "__unseen__",
    }  # training had nulls: "unknown" is a category
    assert rows["plan_tier"].isna().any() and rows["price"].isna().any()
    assert {0.0, 999.0} <= set(rows["days_since_last_order"].dropna())  # its fill value (999) and zero


def test_an_unknown_pipeline_shape_keeps_the_pipeline():
    train = _rows(100, seed=4)[NUMERIC].fillna(0)
    other = make_pipeline(FunctionTransformer(np.log1p), RandomForestClassifier(n_estimators=5, random_state=0)).fit(
        train, train["orders_30d"] > 1
    )
    assert compile_pipeline(other, NUMERIC) is None
