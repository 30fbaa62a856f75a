"""Fixtures of the scoring-service tests: a real MLflow registry (tmp SQLite) with three registered
versions of a tiny pipeline built exactly as training builds it (the real input columns and
contracts), a real SQLite online store with hand-made customers, and the real app served by
uvicorn on a free loopback port in a thread."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
import uvicorn
from mlflow import MlflowClient
from mlflow.models import infer_signature
from mlflow.tracking import fluent

from lakehouse_ml.modeling.models import build_model_pipeline, feature_columns
from lakehouse_ml.online import SQLiteOnlineStore, open_online_store
from lakehouse_ml.serving import create_app, load_settings
from lakehouse_ml.serving.config import TOKEN_VARIABLE, InferenceLogSettings, ServingSettings, Traffic
from tests.helpers import project_config, working_directory

MODEL_NAME = "dev.ml.churn_classifier"
TOKEN = "s3rving-test-token-7c1e"
THRESHOLDS = {"1": 0.4, "2": 0.35, "3": 0.5, "4": 0.5}
NOW = datetime.now(timezone.utc)


def contracts() -> dict[str, dict[str, Any]]:
    """The project's raw feature contracts."""
    params = project_config()["parameters"]
    return {name: params["feature_tables"][name] for name in ("customer_activity", "customer_profile")}


ACTIVITY = [name for name in contracts()["customer_activity"]["features"]]
CATEGORIES = {
    "customer_profile__plan_tier": ["basic", "standard", "premium"],
    "customer_profile__country": ["DE", "FR", "PL"],
    "customer_profile__channel": ["web", "app", "ads"],
}


def feature_rows(n: int, seed: int = 0) -> pd.DataFrame:
    """Training-shaped rows with every real model input (typed as the training set has them) and a label."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"customer_activity__{name}": rng.poisson(3, n).astype(float) for name in ACTIVITY})
    frame["customer_activity__days_since_last_order"] = rng.integers(0, 90, n).astype(float)
    frame["customer_activity__avg_order_value_90d"] = rng.gamma(2.0, 20.0, n).round(2)
    for column, values in CATEGORIES.items():
        frame[column] = rng.choice(values, n)
    frame["customer_profile__monthly_price"] = rng.choice([9.0, 19.0, 29.0], n)
    frame["tenure_days"] = rng.integers(1, 700, n).astype("int64")
    logit = (
        1.0 - 0.5 * frame["customer_activity__orders_30d"] + 0.02 * frame["customer_activity__days_since_last_order"]
    )
    frame["churned"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int32")
    return frame


def on_demand() -> dict[str, Any]:
    """The project's on-demand feature definitions (tenure_days)."""
    return project_config()["parameters"]["on_demand_features"]


def model_columns(frame: pd.DataFrame, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """The model's columns as training chooses them, plus ``extra`` numeric inputs no definition covers."""
    columns = feature_columns(list(frame.columns), contracts(), on_demand())
    columns["numeric"] += [column for column in extra if column in frame.columns]
    return columns


def model_inputs(frame: pd.DataFrame, extra: tuple[str, ...] = ()) -> list[str]:
    columns = model_columns(frame, extra)
    return [*columns["numeric"], *columns["categorical"]]


def register_version(
    frame: pd.DataFrame, family: str, params: dict[str, Any], extra: tuple[str, ...] = ()
) -> tuple[str, Any]:
    """Fit, log (sklearn flavor, signature) and register one version as the pipelines do; (version, model)."""
    columns = model_columns(frame, extra)
    inputs = model_inputs(frame, extra)
    model = build_model_pipeline(family, params, columns["numeric"], columns["categorical"], columns["imputation"])
    model.fit(frame[inputs], frame["churned"])
    example = frame[inputs].head(3)
    with mlflow.start_run() as run:
        mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(example, model.predict_proba(example)),
            pyfunc_predict_fn="predict_proba",
            serialization_format="cloudpickle",
            pip_requirements=["scikit-learn"],
        )
    version = str(mlflow.register_model(f"runs:/{run.info.run_id}/model", MODEL_NAME).version)
    MlflowClient().set_model_version_tag(MODEL_NAME, version, "operating_threshold", str(THRESHOLDS.get(version, 0.5)))
    return version, model


@pytest.fixture(scope="package")
def registry(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """Versions 1 (champion), 2 (challenger), 3 (no alias) and 4 (needs an input no request carries:
    it cannot serve beside 1) of the model in a fresh MLflow store."""
    root = tmp_path_factory.mktemp("serving_registry")
    previous = mlflow.get_tracking_uri()
    # MLflow's setters also write MLFLOW_* environment variables (the experiment id too): restore
    # them all, or later tests log into an experiment id their store does not have.
    saved_environment = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    mlflow.set_registry_uri(f"sqlite:///{root / 'mlflow.db'}")
    # Artifacts in the store's folder: a new experiment's default location is ./mlruns of the cwd.
    with working_directory(root):
        mlflow.create_experiment("serving_tests", artifact_location=(root / "artifacts").as_uri())
    experiment = mlflow.set_experiment("serving_tests")
    try:
        frame = feature_rows(400)
        models = {}
        for family, params in (
            ("logistic_regression", {"C": 1.0}),
            ("logistic_regression", {"C": 0.01}),
            ("logistic_regression", {"C": 0.2}),
        ):
            version, model = register_version(frame, family, params)
            models[version] = model
        frame["loyalty_points"] = np.arange(len(frame), dtype=float)
        version, models[version] = register_version(frame, "logistic_regression", {}, extra=("loyalty_points",))
        client = MlflowClient()
        client.set_registered_model_alias(MODEL_NAME, "champion", "1")
        client.set_registered_model_alias(MODEL_NAME, "challenger", "2")
        yield {
            "root": root,
            "models": models,
            "inputs": model_inputs(frame.drop(columns="loyalty_points")),
            "experiment": experiment,
        }
    finally:
        while mlflow.active_run():
            mlflow.end_run()
        mlflow.set_tracking_uri(previous)
        mlflow.set_registry_uri(previous)
        for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
            del os.environ[key]
        os.environ.update(saved_environment)
        fluent._active_experiment_id = None


# ---------------------------------------------------------------- the online store


def store_rows(customers: dict[str, pd.Series]) -> dict[str, pd.DataFrame]:
    """Online-store rows of both feature tables for customers given as training-shaped rows."""
    activity, profile = [], []
    for customer, row in customers.items():
        activity.append(
            {
                "customer_id": customer,
                **{name: row[f"customer_activity__{name}"] for name in ACTIVITY},
                "feature_ts": NOW - timedelta(hours=12),
                "ingested_at": NOW - timedelta(hours=11),
            }
        )
        profile.append(
            {
                "customer_id": customer,
                "plan_tier": row["customer_profile__plan_tier"],
                "monthly_price": row["customer_profile__monthly_price"],
                "country": row["customer_profile__country"],
                "channel": row["customer_profile__channel"],
                "signup_ts": NOW - timedelta(days=int(row["tenure_days"])),
                "feature_ts": NOW - timedelta(days=30),
                "ingested_at": NOW - timedelta(days=30),
            }
        )
    return {"customer_activity": pd.DataFrame(activity), "customer_profile": pd.DataFrame(profile)}


@pytest.fixture(scope="package")
def online_store(tmp_path_factory) -> dict[str, Any]:
    """50 good customers, one with stale activity, one out of contract, one without a profile, one
    signed up in 5 days (tenure -5, out of its declared range)."""
    path = tmp_path_factory.mktemp("serving_store") / "online_store.db"
    rows = feature_rows(53, seed=7)
    customers = {f"c-{i:04d}": rows.iloc[i] for i in range(50)}
    bad = rows.iloc[51].copy()
    bad["customer_activity__orders_30d"] = -3.0
    future = feature_rows(1, seed=8).iloc[0].copy()
    future["tenure_days"] = -5
    special = {"c-stale": rows.iloc[50], "c-bad": bad, "c-noprofile": rows.iloc[52], "c-future": future}
    tables = store_rows({**customers, **special})
    activity, profile = tables["customer_activity"], tables["customer_profile"]
    activity.loc[activity["customer_id"] == "c-stale", "feature_ts"] = NOW - timedelta(days=5)
    profile = profile[profile["customer_id"] != "c-noprofile"]
    publish = {
        "customer_activity": {"rows": activity, "source_version": 4, "key_columns": ["customer_id"]},
        "customer_profile": {"rows": profile, "source_version": 2, "key_columns": ["customer_id"]},
    }
    store = SQLiteOnlineStore(str(path))
    store.publish(publish)
    store.close()
    expected = pd.DataFrame(customers).T
    # tenure as the lookup computes it at request time (whole UTC days since signup).
    return {"path": str(path), "customers": expected, "good": list(customers), "publish": publish}


@pytest.fixture(scope="package")
def redis_online_store(redis_server, online_store) -> dict[str, Any]:
    """The same publish in the session's Redis (a namespace of its own); the service's store options."""
    config = {
        "type": "redis",
        "url": redis_server.url,
        "password": redis_server.password,
        "namespace": f"serving-tests:{uuid.uuid4().hex}",
    }
    store = open_online_store(config)
    store.publish(online_store["publish"])
    store.close()
    return config


# ---------------------------------------------------------------- the live service


def serving_settings(root: Path, store_path: str | None, **changes: Any) -> ServingSettings:
    """The project's real serving settings (env local) pointed at the test store, log and registry."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(TOKEN_VARIABLE, TOKEN)
        settings = load_settings("local")
    defaults = {
        "inference_log": InferenceLogSettings(
            path=str(root / "inference_log"), flush_rows=100_000, flush_interval_s=3600
        ),
        "online_store": {"type": "sqlite", "path": store_path} if store_path else None,
        "poll_interval_s": 0,
        "traffic": Traffic("canary", 0.0),
        "request_time": "now",
    }
    return replace(settings, **{**defaults, **changes})


@dataclass
class LiveService:
    url: str
    app: Any
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def service(self) -> Any:
        return self.app.state.service

    def client(self, token: str | None = TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@contextmanager
def live_service(settings: ServingSettings, *, loaded: bool = True) -> Iterator[LiveService]:
    """The real app under uvicorn on a free loopback port, in a thread; stopped (log flushed) on exit.
    ``loaded``: entered once the releases' first load has ended too (else as soon as it listens)."""
    app = create_app(settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the scoring service did not start")
        time.sleep(0.02)
    deadline = time.monotonic() + 60
    while loaded and not (getattr(app.state, "loaded", None) and app.state.loaded.is_set()):
        if time.monotonic() > deadline:
            raise RuntimeError("the scoring service did not load its releases")
        time.sleep(0.02)
    try:
        yield LiveService(f"http://127.0.0.1:{sock.getsockname()[1]}", app, server, thread)
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()


@pytest.fixture(scope="package")
def live(registry, online_store, tmp_path_factory) -> Iterator[LiveService]:
    """The service on the test registry and store (canary share 0, no polling, manual log flushes)."""
    root = tmp_path_factory.mktemp("serving_live")
    with live_service(serving_settings(root, online_store["path"])) as running:
        yield running
