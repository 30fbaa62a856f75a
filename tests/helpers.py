"""Test helpers: the project's real catalog and parameters, rooted in a temporary folder; model
versions registered the way the loop registers them."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog
from kedro.pipeline import Pipeline
from kedro.runner import SequentialRunner
from mlflow import MlflowClient
from mlflow.models import infer_signature
from omegaconf import OmegaConf

from lakehouse_ml.configuration import CONFIG_LOADER_ARGS
from lakehouse_ml.governance import ConfigLayout, release_governance
from lakehouse_ml.modeling.models import build_model_pipeline, feature_columns

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def working_directory(path: Path) -> Iterator[Path]:
    """Run the block with ``path`` as the working directory (``contextlib.chdir`` is Python 3.11+).

    MLflow resolves a SQLite store's default artifact root (./mlruns) against the working directory
    when the store is first built, and keeps that store for the process: tests build stores in tmp
    this way, or artifacts land in the project's root."""
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield path
    finally:
        os.chdir(previous)


def project_config(
    env: str = "local", runtime_params: dict[str, Any] | None = None, conf_source: Path | None = None
) -> OmegaConfigLoader:
    """The project's configuration loader, exactly as ``kedro run --env <env>`` builds it."""
    return OmegaConfigLoader(
        conf_source=str(conf_source or PROJECT_ROOT / "conf"),
        env=env,
        runtime_params=runtime_params or {},
        **{k: v for k, v in CONFIG_LOADER_ARGS.items() if k != "default_run_env"},
    )


def _flatten_params(params: dict[str, Any], prefix: str = "params:") -> dict[str, Any]:
    """Kedro's feed dict: ``params:a`` for every key and ``params:a.b`` for nested keys."""
    feed = {}
    for key, value in params.items():
        feed[f"{prefix}{key}"] = value
        if isinstance(value, dict):
            feed.update(_flatten_params(value, f"{prefix}{key}."))
    return feed


def run_pipeline(
    pipeline: Pipeline,
    env: str = "local",
    runtime_params: dict[str, Any] | None = None,
    conf_source: Path | None = None,
) -> dict[str, Any]:
    """Run ``pipeline`` on the project's real catalog and parameters, relative to the cwd.

    Tests chdir into a temporary folder first, so every table lands there. ``release_governance``
    is built as ``GovernanceHooks`` builds it; runtime parameters here stand for a test's own
    configuration, so they are not refused (``kedro run`` refuses them: tests/test_cli.py).
    """
    config = project_config(env, runtime_params, conf_source)
    catalog = DataCatalog.from_config(config["catalog"])
    params = OmegaConf.to_container(OmegaConf.merge(config["parameters"], runtime_params or {}))
    for name, value in _flatten_params(params).items():
        catalog[name] = value
    catalog["release_governance"] = release_governance(
        params, ConfigLayout.of(config), mlflow.get_tracking_uri(), os.environ
    )
    try:
        return SequentialRunner().run(pipeline, catalog)
    finally:
        # Metric datasets log through MLflow's fluent API, which starts a run implicitly when
        # none is active (a Kedro session would have kedro-mlflow's); end it like a session would.
        while mlflow.active_run():
            mlflow.end_run()


class FrameVersions:
    """In-memory stand-in for :class:`lakehouse_ml.datasets.DeltaVersions`: version i is frames[i]."""

    def __init__(
        self, frames: list, schema: str, properties: dict[str, str] | None = None, upserts: bool = False
    ) -> None:
        self._frames, self._schema = frames, schema
        self.version = len(frames) - 1 if frames else None
        self.properties = properties or {}
        # Whether each version after the first was an upsert-only MERGE of the one before.
        self._upserts = upserts

    def only_upserts_since(self, version: int) -> bool:
        return self._upserts

    def at(self, version: int | None):
        from lakehouse_ml.engine import get_spark

        if version is not None:
            return self._frames[version]
        return self._frames[0].limit(0) if self._frames else get_spark().createDataFrame([], self._schema)

    @property
    def current(self):
        return self.at(self.version)


def write_landing(root: Path, source: str, delivery: str, name: str, lines: list[str | dict]) -> Path:
    """Write one delivered landing file (JSON lines for dicts, raw text lines otherwise)."""
    folder = root / "data" / "01_raw" / "landing" / "dev" / source / delivery
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("".join((json.dumps(line) if isinstance(line, dict) else line) + "\n" for line in lines))
    return path


def small_training_set(cutoffs: list, per_cutoff: int = 60) -> pd.DataFrame:
    """A training-set-shaped frame: ``per_cutoff`` customers per cutoff; churn is likelier with fewer
    orders (seeded); country, plan tier (with nulls) and tenure as in the real table."""
    rng = np.random.default_rng(0)
    rows = []
    for cutoff in cutoffs:
        orders = rng.poisson(3, per_cutoff).astype(float)
        churned = (rng.random(per_cutoff) < 1 / (1 + np.exp(orders - 2))).astype("int32")
        rows.append(
            pd.DataFrame(
                {
                    "customer_id": [f"c{i:03d}" for i in range(per_cutoff)],
                    "cutoff_ts": cutoff,
                    "churned": churned,
                    "customer_activity__orders_30d": orders,
                    "customer_profile__country": rng.choice(["DE", "FR"], per_cutoff),
                    "customer_profile__plan_tier": rng.choice(["basic", "premium", None], per_cutoff),
                    "tenure_days": rng.integers(1, 300, per_cutoff).astype(float),
                }
            )
        )
    # Shuffled, as a Delta read may return rows in any order.
    return pd.concat(rows).sample(frac=1.0, random_state=1).reset_index(drop=True)


# ---------------------------------------------------------------- registered model versions

MODEL_NAME = "dev.ml.churn_classifier"


def merged_parameters(runtime: dict[str, Any] | None = None) -> dict[str, Any]:
    """The project's parameters with the runtime ones merged in, as ``run_pipeline`` feeds them."""
    return OmegaConf.to_container(OmegaConf.merge(project_config()["parameters"], runtime or {}))


def register_version(
    training_set: pd.DataFrame,
    train_cutoffs,
    *,
    threshold: float = 0.3,
    alias: str | None = None,
    regularisation: float = 1.0,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit a logistic regression on ``train_cutoffs`` of ``training_set`` and register it (``alias`` set when given)."""
    params = params or merged_parameters()
    contracts = {name: params["feature_tables"][name] for name in ("customer_activity", "customer_profile")}
    columns = feature_columns(list(training_set.columns), contracts, params["on_demand_features"])
    inputs = [*columns["numeric"], *columns["categorical"]]
    train = training_set[training_set["cutoff_ts"].isin(list(train_cutoffs))]
    model = build_model_pipeline(
        "logistic_regression", {"C": regularisation}, columns["numeric"], columns["categorical"], columns["imputation"]
    )
    model.fit(train[inputs], train["churned"])
    example = train[inputs].head(3)
    with mlflow.start_run() as run:
        mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(example, model.predict_proba(example)),
            pyfunc_predict_fn="predict_proba",
            serialization_format="cloudpickle",
            pip_requirements=["scikit-learn"],  # not inferred: that spawns a Python subprocess (~2 s)
        )
    client = MlflowClient()
    version = str(mlflow.register_model(f"runs:/{run.info.run_id}/model", MODEL_NAME).version)
    for key, value in (
        ("run_id", run.info.run_id),
        ("validation_status", "passed"),
        ("operating_threshold", str(threshold)),
    ):
        client.set_model_version_tag(MODEL_NAME, version, key, value)
    if alias:
        client.set_registered_model_alias(MODEL_NAME, alias, version)
    return {"version": version, "run_id": run.info.run_id, "model": model, "inputs": inputs, "threshold": threshold}


def delete_model() -> None:
    """Remove the registered model (tests share one MLflow store)."""
    client = MlflowClient()
    if client.search_registered_models(f"name = '{MODEL_NAME}'"):
        client.delete_registered_model(MODEL_NAME)
