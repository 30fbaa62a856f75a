"""Shared fixtures: one embedded Spark engine for the whole test session (the users' engine);
the rule that marks whole categories `slow` (the fast lane is `pytest -m "not slow"`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from lakehouse_ml.engine import ENGINE, EngineConfig
from tests.helpers import working_directory

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


# ------------------------------------------------------------- the fast lane: pytest -m "not slow"
# `slow` is given by rule to whole categories, so the lane starts no server (the fixtures below
# start theirs only when a selected test asks for them) and runs no pipeline end to end:
SLOW_MARKERS = ("e2e", "cluster", "services")  # kedro CLI in a subprocess, Spark cluster, team servers
SLOW_FOLDERS = ("cluster", "crash", "properties", "services")  # tests/<folder>/: whole categories
SERVER_FIXTURES = frozenset({"spark_cluster", "postgres", "redis_server", "mlflow_server"})


def is_slow_by_rule(item: pytest.Item) -> bool:
    """Whether ``item`` belongs to a slow category (individual slow tests carry their own mark)."""
    if any(item.get_closest_marker(name) for name in SLOW_MARKERS):
        return True
    if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
        return True
    # Property-based tests (Hypothesis) run their body for many generated examples.
    if getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
        return True
    parts = item.path.relative_to(TESTS).parts if item.path.is_relative_to(TESTS) else ()
    if parts and parts[0] in SLOW_FOLDERS:
        return True
    # tests/pipelines/<stage>/test_pipeline.py runs the stage's pipeline on the engine, often
    # several times; the stage's nodes keep their test_nodes.py in the fast lane (evaluation
    # has none: its nodes run only here).
    return len(parts) == 3 and parts[0] == "pipelines" and parts[2] == "test_pipeline.py"


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Adds ``slow`` to every test of a slow category; it never deselects anything itself."""
    for item in items:
        if not item.get_closest_marker("slow") and is_slow_by_rule(item):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def mlflow_store(tmp_path_factory):
    """Pipelines run without a Kedro session log to MLflow's default store: keep it in tmp."""
    store = tmp_path_factory.mktemp("mlflow")
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store / 'mlflow.db'}"
    import mlflow

    with working_directory(store):
        mlflow.MlflowClient().search_experiments(max_results=1)
    yield store

    # Runs that logging started implicitly are ended here, in the tmp store, not at interpreter
    # exit against MLflow's default store.
    while mlflow.active_run():
        mlflow.end_run()
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous


# Set to a Spark Connect URL (e.g. sc://127.0.0.1:15002 from `python -m lakehouse_ml.cluster
# start`) to run the tests that use the `spark` fixture against that server instead of the
# embedded engine.
REMOTE_ENV = "LAKEHOUSE_TEST_SPARK_REMOTE"


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory):
    """The Spark Connect URL of a local Spark cluster with Delta Lake, started once per test run.

    Reuses the server named by ``LAKEHOUSE_TEST_SPARK_REMOTE`` if set (a developer's running
    ``python -m lakehouse_ml.cluster start``); otherwise starts master, two workers and the
    Connect server on free loopback ports and stops exactly those at the end of the run.
    """
    url = os.environ.get(REMOTE_ENV)
    if url:
        yield url
        return
    import socket

    from lakehouse_ml import cluster

    def free_port() -> int:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]

    classic = cluster.project_classic_settings(PROJECT_ROOT)
    config = cluster.ClusterConfig(
        state_dir=tmp_path_factory.mktemp("spark_cluster"),
        master_port=free_port(),
        connect_port=free_port(),
        delta_package=classic.get("delta_package"),
        ivy_dir=classic.get("ivy_dir", cluster.DEFAULT_IVY_DIR),
    )
    cluster.start(config)
    try:
        cluster.check_delta(config.remote_url)
        yield config.remote_url
    finally:
        cluster.stop(config)


@pytest.fixture(scope="session")
def spark():
    """The embedded pysail engine, exactly as ``kedro run`` starts it from ``conf/base/spark.yml``.

    With ``LAKEHOUSE_TEST_SPARK_REMOTE`` set, the engine in ``remote`` mode on that URL instead.
    Only the base file: a developer's ``conf/local`` must not move the tests to another engine.
    """
    url = os.environ.get(REMOTE_ENV)
    if url:
        config = EngineConfig(mode="remote", remote_url=url, spark_conf={"spark.sql.session.timeZone": "UTC"})
        # SPARK_REMOTE wins over remote.url in the engine: the test URL must be the one used.
        os.environ.pop("SPARK_REMOTE", None)
    else:
        base = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "spark.yml").read_text())
        config = EngineConfig.from_dict({**base, "mode": "embedded"})
    # The engine sets its SAIL_* variables in this process; later tests and their children must
    # not depend on whether this fixture ran before them.
    added = [key for key in config.embedded_env if key not in os.environ]
    session = ENGINE.start(config)
    yield session
    ENGINE.stop()
    for key in added:
        os.environ.pop(key, None)


# ---------------------------------------------------------------- team services (marker `services`)
# Real servers on loopback, started once per test run by the first test that needs them and
# stopped at its end (tests/services/servers.py).


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    """A PostgreSQL server with a password-authenticated role (``.url(database)`` creates one)."""
    from tests.services.servers import start_postgres

    server = start_postgres(tmp_path_factory.mktemp("postgres"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A Redis server with a password."""
    from tests.services.servers import start_redis

    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory, postgres):
    """An MLflow tracking server on ``postgres`` with basic authentication and proxied artifacts."""
    from tests.services.servers import start_mlflow_server

    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow_server"), postgres)
    yield server
    server.stop()
