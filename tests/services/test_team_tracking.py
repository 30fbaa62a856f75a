"""The team environment against a real MLflow tracking server (PostgreSQL store, proxied artifacts,
basic authentication): the default loop, releases, the service's hot swap, two environments at
once, and a server that is down, refuses a password or goes away mid-run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient

from lakehouse_ml.datasets import PandasDeltaDataset
from tests.helpers import PROJECT_ROOT
from tests.pipelines.registration.releases import log_candidate
from tests.services.servers import free_port, start_mlflow_server
from tests.test_cli import SMALL_LOOP, kedro, serving

# The first test also runs the two loops of its module fixture.
pytestmark = [pytest.mark.services, pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]

USER, PASSWORD = "team-ci", "team-ci-password-1"
ENVS = ("team", "team_b")  # the committed env, and a second one each test project writes
DOCUMENTED_URI = "http://127.0.0.1:5000"


def model_of(env: str) -> str:
    return f"{env}.ml.churn_classifier"


@dataclass(frozen=True)
class Services:
    """The team's other services the envs use: the Redis online store and the Optuna PostgreSQL."""

    redis: Any
    postgres: Any


def _write_env(project: Path, env: str, server_url: str, services: Services) -> None:
    """conf/<env>: the team env pointed at ``server_url`` and ``services``; a second env as a copy
    with its own names (catalog, model, experiment, online store namespace, study)."""
    folder = project / "conf" / env
    if env != "team":
        shutil.copytree(PROJECT_ROOT / "conf" / "team", folder, ignore=shutil.ignore_patterns("credentials*"))
    globals_ = yaml.safe_load((folder / "globals.yml").read_text())
    if env != "team":
        globals_.update(
            catalog=env, landing_root=f"data/01_raw/landing/{env}", churn_model_name=model_of(env), kedro_env=env
        )
    services.postgres.create_database("optuna")
    globals_.update(
        online_store_url=services.redis.url,
        online_store_namespace=f"lakehouse_ml:{env}",
        postgres_host="127.0.0.1",
        postgres_port=services.postgres.port,
    )
    (folder / "globals.yml").write_text(yaml.safe_dump(globals_))
    # The services' logins (the MLflow one is each test's choice: write_credentials).
    (folder / "credentials.yml").write_text(yaml.safe_dump(service_credentials(services)))
    mlflow_yml = (folder / "mlflow.yml").read_text()
    assert DOCUMENTED_URI in mlflow_yml  # the committed file names the documented server
    mlflow_yml = mlflow_yml.replace(DOCUMENTED_URI, server_url).replace("lakehouse_ml_team", f"lakehouse_ml_{env}")
    (folder / "mlflow.yml").write_text(mlflow_yml)
    (folder / "parameters_small_loop.yml").write_text(SMALL_LOOP)


def service_credentials(services: Services) -> dict[str, Any]:
    """credentials.yml entries of the Redis online store and the Optuna storage."""
    return {
        "online_store": {"password": services.redis.password},
        "optuna_storage": {"username": services.postgres.user, "password": services.postgres.password},
    }


def team_project(root: Path, server_url: str, services: Services, envs: tuple[str, ...] = ENVS) -> Path:
    """A copy of the project (configuration only) whose team envs track to ``server_url`` and use ``services``."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_ROOT / "pyproject.toml", root)
    shutil.copytree(PROJECT_ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("credentials*"))
    for env in envs:
        _write_env(root, env, server_url, services)
    (root / "src").mkdir()
    (root / "data").mkdir()
    return root


def as_user(password: str = PASSWORD) -> dict[str, str]:
    return {"MLFLOW_TRACKING_USERNAME": USER, "MLFLOW_TRACKING_PASSWORD": password}


def write_credentials(project: Path, env: str, password: str) -> None:
    """conf/<env>/credentials.yml with the entry mlflow.yml names (server.credentials)."""
    path = project / "conf" / env / "credentials.yml"
    entries = yaml.safe_load(path.read_text()) if path.exists() else {}
    entries["mlflow_team"] = {"MLFLOW_TRACKING_USERNAME": USER, "MLFLOW_TRACKING_PASSWORD": password}
    path.write_text(yaml.safe_dump(entries))


def no_credentials_in_environment() -> dict[str, str]:
    """The test process's environment without MLflow credentials (the credentials.yml route)."""
    return {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}


def run_kedro(
    project: Path, *args: str, environ: dict[str, str] | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """``kedro run`` in ``project`` with exactly ``environ`` (default: the test user's credentials)."""
    env = {**os.environ, **as_user()} if environ is None else environ
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:  # tests/test_cli.kedro builds the child's environment from os.environ
        return kedro(project, "run", *args, timeout=timeout)
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextmanager
def on_server(url: str, password: str = PASSWORD) -> Iterator[MlflowClient]:
    """MLflow in this process pointed at ``url`` as the test user; everything put back afterwards."""
    import mlflow

    # MLFLOW_EXPERIMENT_ID: mlflow.set_experiment exports the active experiment for subprocesses.
    keys = (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_REGISTRY_URI",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_EXPERIMENT_ID",
    )
    saved = {k: os.environ.get(k) for k in keys}
    previous, previous_registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    os.environ.update({"MLFLOW_TRACKING_URI": url, "MLFLOW_REGISTRY_URI": url, **as_user(password)})
    mlflow.set_tracking_uri(url)
    mlflow.set_registry_uri(url)
    try:
        yield MlflowClient(url, url)
    finally:
        while mlflow.active_run():
            mlflow.end_run()
        mlflow.set_tracking_uri(previous)
        mlflow.set_registry_uri(previous_registry)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        # An experiment set on the server stays the active one: make the previous one (or the
        # restored store's default) active again, or later tests log to an id their store lacks.
        mlflow.set_experiment(experiment_id=saved["MLFLOW_EXPERIMENT_ID"] or "0")
        if saved["MLFLOW_EXPERIMENT_ID"] is None:
            os.environ.pop("MLFLOW_EXPERIMENT_ID", None)


def aliases(client: MlflowClient, name: str) -> dict[str, str]:
    return {alias: str(version) for alias, version in client.get_registered_model(name).aliases.items()}


def log_of(result: subprocess.CompletedProcess) -> str:
    return " ".join((result.stdout + result.stderr).split())  # the log wraps long lines


# ---------------------------------------------------------------- one loop per env, both at once


@pytest.fixture(scope="module")
def team_server(mlflow_server):
    """The session's tracking server with the test user (EDIT, the server's default permission)."""
    if USER not in mlflow_server.users:
        mlflow_server.add_user(USER, PASSWORD)
    return mlflow_server


@pytest.fixture(scope="module")
def loops(tmp_path_factory, team_server, redis_server, postgres) -> tuple[Path, dict[str, str]]:
    """The default loop of `team` (credentials from conf/team/credentials.yml) and of `team_b`
    (credentials from the environment), run at the same time in one project copy; their logs."""
    project = team_project(tmp_path_factory.mktemp("team"), team_server.url, Services(redis_server, postgres))
    write_credentials(project, "team", PASSWORD)
    started = {}
    for env, environ in (("team", no_credentials_in_environment()), ("team_b", {**os.environ, **as_user()})):
        environ = {**environ, "LAKEHOUSE_ML_ROOT": str(project), "KEDRO_DISABLE_TELEMETRY": "1", "COLUMNS": "200"}
        environ.pop("SPARK_REMOTE", None)
        started[env] = subprocess.Popen(
            [str(Path(sys.executable).with_name("kedro")), "run", "--env", env],
            cwd=project,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    logs = {env: process.communicate(timeout=1500)[0] for env, process in started.items()}
    for env, process in started.items():
        assert process.returncode == 0, f"{env}:\n{logs[env][-5000:]}"
    return project, logs


def test_the_default_loop_tracks_registers_and_releases_on_the_server(loops, team_server):
    import mlflow

    project, logs = loops
    assert f"MLflow tracking server {team_server.url} answers (user {USER})" in " ".join(logs["team"].split())
    with on_server(team_server.url) as client:
        experiment = client.get_experiment_by_name("lakehouse_ml_team")
        assert experiment.artifact_location.startswith("mlflow-artifacts:"), experiment.artifact_location
        runs = client.search_runs([experiment.experiment_id], max_results=1000)
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert parents[0].info.user_id == USER  # the server's authenticated user, not the OS user
        nodes = {r.data.tags["node"] for r in children}
        assert {"training.refit_candidate", "training.log_candidate", "training.evaluate_candidate"} <= nodes, sorted(
            nodes
        )
        assert {r.data.tags["env"] for r in children} == {"team"}
        # Artifacts are stored by the server and read back through it.
        assert all(r.info.artifact_uri.startswith("mlflow-artifacts:") for r in runs)
        environment = json.loads(
            Path(
                mlflow.artifacts.download_artifacts(
                    run_id=parents[0].info.run_id,
                    artifact_path="environment.json",
                    dst_path=str(project / "data" / "download"),
                )
            ).read_text()
        )
        assert environment["packages"]["mlflow"] == mlflow.__version__
        # Registered, challenger then champion by the dev-like release policy, and loadable from the server.
        versions = client.search_model_versions(f"name = '{model_of('team')}'")
        assert [v.version for v in versions] == ["1"] and versions[0].run_id in {r.info.run_id for r in runs}
        assert aliases(client, model_of("team")) == {"champion": "1"}
        champion = mlflow.pyfunc.load_model(f"models:/{model_of('team')}@champion")
        assert champion.metadata.get_input_schema() is not None
    predictions = PandasDeltaDataset(filepath=str(project / "data/lakehouse/team/ml/churn_predictions")).load()
    assert len(predictions) > 0 and set(predictions["model_version"]) == {"1"}
    moves = PandasDeltaDataset(filepath=str(project / "data/lakehouse/team/ml/model_promotions")).load()
    assert set(moves["actor"]) == {USER} and set(moves["actor_source"]) == {
        f"mlflow_server:127.0.0.1:{team_server.port}"
    }
    # Nothing tracked locally.
    for local in ("mlflow.db", "mlruns", "mlartifacts"):
        assert not (project / local).exists(), local
    assert not list(project.rglob("mlflow.db")) and not list(project.rglob("mlruns"))
    assert PASSWORD not in logs["team"] + logs["team_b"]


def test_two_environments_at_once_keep_their_runs_versions_and_aliases_apart(
    loops, team_server, redis_server, postgres
):
    import optuna

    from lakehouse_ml.online import open_online_store

    for env in ENVS:  # each env's online rows under its own namespace of the one Redis
        store = open_online_store(
            {
                "type": "redis",
                "url": redis_server.url,
                "password": redis_server.password,
                "namespace": f"lakehouse_ml:{env}",
            }
        )
        try:
            assert store.tables() and all(store.table_state(table)["rows"] > 0 for table in store.tables())
        finally:
            store.close()
    # Each env's own study in the one Optuna database, each with its own n_trials (the small loop's 4).
    studies = {s.study_name: s for s in optuna.get_all_study_summaries(postgres.url("optuna"))}
    for env in ENVS:
        assert studies[f"churn_tuning_v1_{env}"].n_trials == 4, sorted(studies)
    with on_server(team_server.url) as client:
        run_ids, spans = {}, {}
        for env in ENVS:
            experiment = client.get_experiment_by_name(f"lakehouse_ml_{env}")
            runs = client.search_runs([experiment.experiment_id], max_results=1000)
            run_ids[env] = {r.info.run_id for r in runs}
            assert {r.data.tags["env"] for r in runs if "env" in r.data.tags} == {env}
            [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
            spans[env] = (parent.info.start_time, parent.info.end_time)
            # Node runs nest under the parent, trials and the candidate's run under node runs: all in this env.
            assert {r.data.tags["mlflow.parentRunId"] for r in runs if "mlflow.parentRunId" in r.data.tags} <= run_ids[
                env
            ]
        assert not run_ids["team"] & run_ids["team_b"]
        for env in ENVS:
            versions = client.search_model_versions(f"name = '{model_of(env)}'")
            assert [v.version for v in versions] == ["1"]
            assert {v.run_id for v in versions} <= run_ids[env]  # each model only its own env's versions
            assert aliases(client, model_of(env)) == {"champion": "1"}
    # The two loops did run at the same time (else this proves nothing about running at once).
    (start_a, end_a), (start_b, end_b) = spans["team"], spans["team_b"]
    assert start_a < end_b and start_b < end_a


# ---------------------------------------------------------------- releases and the service's hot swap


def _challenger(project: Path, url: str, env: str = "team") -> str:
    """A new candidate logged to the server as the test user, registered by `kedro run --pipeline registration`."""
    import mlflow

    with on_server(url) as client:
        mlflow.set_experiment(f"lakehouse_ml_{env}")
        log_candidate(project, catalog=env)
        before = aliases(client, model_of(env))
    result = run_kedro(project, "--env", env, "--pipeline", "registration")
    assert result.returncode == 0, log_of(result)[-4000:]
    with on_server(url) as client:
        after = aliases(client, model_of(env))
    assert after["challenger"] != before.get("challenger")
    return after["challenger"]


def _servable_challenger(url: str, env: str = "team") -> str:
    """The champion's logged model registered again (tags copied) as the challenger: a new version
    the service can load (the candidates log_candidate makes carry no signature)."""
    import mlflow

    with on_server(url) as client:
        champion = client.get_model_version_by_alias(model_of(env), "champion")
        # The champion's logged model (source models:/m-<id>) registered again: MLflow's own resolution.
        version = mlflow.register_model(champion.source, model_of(env), tags=dict(champion.tags)).version
        client.set_registered_model_alias(model_of(env), "challenger", version)
    return str(version)


def _served_version(url: str, token: str, customers: list[str]) -> set[str]:
    import httpx

    answer = httpx.post(
        f"{url}/v1/score/customers",
        json={"customer_ids": customers},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return {p["model_version"] for p in answer.json()["predictions"]}


def _reload(url: str, token: str) -> None:
    import httpx

    answer = httpx.post(f"{url}/admin/reload", headers={"Authorization": f"Bearer {token}"}, timeout=120)
    assert answer.status_code == 200, answer.text


def test_promotion_hot_swap_rollback_and_approval_against_the_server(loops, team_server):
    project, _ = loops
    url = team_server.url
    with on_server(url) as client:
        other_before = aliases(client, model_of("team_b"))
        champion = aliases(client, model_of("team"))["champion"]
    challenger = _servable_challenger(url)
    predictions = PandasDeltaDataset(filepath=str(project / "data/lakehouse/team/ml/churn_predictions")).load()
    customers = sorted(predictions["customer_id"])[:3]
    token = "team-service-token"
    service_env = {"MLFLOW_TRACKING_URI": url, **as_user()}
    with serving(project, "team", token, service_env) as (service, output):
        assert _served_version(service, token, customers) == {champion}

        promoted = run_kedro(project, "--env", "team", "--pipeline", "promotion")
        assert promoted.returncode == 0, log_of(promoted)[-4000:]
        with on_server(url) as client:
            assert aliases(client, model_of("team")) == {"champion": challenger, "previous_champion": champion}
        _reload(service, token)
        assert _served_version(service, token, customers) == {challenger}

        rolled_back = run_kedro(project, "--env", "team", "--pipeline", "rollback")
        assert rolled_back.returncode == 0, log_of(rolled_back)[-4000:]
        with on_server(url) as client:
            assert aliases(client, model_of("team"))["champion"] == champion
        _reload(service, token)
        assert _served_version(service, token, customers) == {champion}
    assert PASSWORD not in output[0] and token not in output[0]

    # The approval flow, with staging's policy written into this env's files (policy is never --params).
    (project / "conf/team/parameters_promotion.yml").write_text(
        "promotion:\n  require_approval: true\n  auto_promote: false\n"
    )
    waiting = _challenger(project, url)
    refused = run_kedro(project, "--env", "team", "--pipeline", "promotion")
    assert refused.returncode != 0 and "approved_by" in log_of(refused), log_of(refused)[-3000:]
    assert f"MLFLOW_TRACKING_URI={url} python -c" in log_of(refused)  # the approval command names this registry
    with on_server(url) as client:
        assert aliases(client, model_of("team")) == {"champion": champion, "challenger": waiting}
        client.set_model_version_tag(model_of("team"), waiting, "approved_by", "a-reviewer")
    approved = run_kedro(project, "--env", "team", "--pipeline", "promotion")
    assert approved.returncode == 0, log_of(approved)[-4000:]
    with on_server(url) as client:
        assert aliases(client, model_of("team")) == {"champion": waiting, "previous_champion": champion}
        assert aliases(client, model_of("team_b")) == other_before  # the other env's aliases never moved
    rows = PandasDeltaDataset(filepath=str(project / "data/lakehouse/team/ml/model_promotions")).load()
    last = rows[(rows["action"] == "promote") & (rows["alias"] == "champion")].sort_values("event_ts").iloc[-1]
    assert (last["to_version"], last["approved_by"], last["actor"]) == (waiting, "a-reviewer", USER)


# ---------------------------------------------------------------- bad situations


@pytest.fixture(scope="module")
def bare_project(tmp_path_factory, team_server, redis_server, postgres) -> Path:
    """A project copy without data: the checks below refuse the run before any node."""
    return team_project(
        tmp_path_factory.mktemp("team_bare"), team_server.url, Services(redis_server, postgres), envs=("team",)
    )


def test_a_server_that_is_down_fails_fast_naming_the_service_and_the_setting(bare_project):
    closed = f"http://127.0.0.1:{free_port()}"
    mlflow_yml = bare_project / "conf/team/mlflow.yml"
    original = mlflow_yml.read_text()
    mlflow_yml.write_text(
        original.replace(f"http://127.0.0.1:{original.split('http://127.0.0.1:')[1].split()[0]}", closed)
    )
    try:
        started = time.monotonic()
        result = run_kedro(bare_project, "--env", "team", "--pipeline", "promotion", timeout=180)
        elapsed = time.monotonic() - started
    finally:
        mlflow_yml.write_text(original)
    log = log_of(result)
    assert result.returncode != 0
    assert (
        f"the MLflow tracking server at {closed} does not answer (ConnectionError): start it, "
        "or correct server.mlflow_tracking_uri in conf/team/mlflow.yml"
    ) in log, log[-3000:]
    assert "plan_promotion" not in log and elapsed < 90


@pytest.mark.parametrize("route", ["environment", "credentials.yml"])
def test_a_wrong_password_names_the_credentials_setting_and_never_prints_it(bare_project, team_server, route):
    wrong = "not-the-password-42"
    credentials = bare_project / "conf/team/credentials.yml"
    if route == "credentials.yml":
        write_credentials(bare_project, "team", wrong)
        environ = no_credentials_in_environment()
        setting = (
            "the 'mlflow_team' entry (MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD) of conf/team/credentials.yml"
        )
    else:
        environ = {**os.environ, **as_user(wrong)}
        setting = (
            "no 'mlflow_team' entry in conf/team/credentials.yml, so the environment variables "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
        )
    try:
        result = run_kedro(bare_project, "--env", "team", "--pipeline", "promotion", environ=environ, timeout=180)
    finally:
        credentials.unlink(missing_ok=True)
    log = log_of(result)
    assert result.returncode != 0
    assert (
        f"the MLflow tracking server at {team_server.url} refused the credentials of user '{USER}' (HTTP 401): check {setting}"
    ) in log, log[-3000:]
    assert wrong not in result.stdout + result.stderr


def test_a_server_lost_mid_run_fails_the_run_and_moves_no_alias(loops, postgres, tmp_path_factory):
    """A dedicated server (its own database) killed once the candidate is refitted, before it is logged."""
    import mlflow

    project, _ = loops
    root = tmp_path_factory.mktemp("lost_server")
    server = start_mlflow_server(root, postgres, database="mlflow_lost")
    try:
        server.add_user(USER, PASSWORD)
        env = "team_lost"  # team_b's catalog and data, on the dedicated server
        shutil.copytree(project / "conf/team_b", project / "conf" / env)
        mlflow_yml = project / "conf" / env / "mlflow.yml"
        mlflow_yml.write_text(
            mlflow_yml.read_text().replace(
                mlflow_yml.read_text().split("mlflow_tracking_uri: ")[1].split()[0],
                server.url,
            )
        )
        with on_server(server.url) as client:  # a released champion on the dedicated server
            mlflow.set_experiment("lakehouse_ml_team_b")
            run_id = log_candidate(root, catalog="team_b")
            version = mlflow.register_model(f"runs:/{run_id}/model", model_of("team_b")).version
            client.set_registered_model_alias(model_of("team_b"), "champion", version)
            before = aliases(client, model_of("team_b"))
        pointer = project / "data/06_models/team_b/candidate.json"
        candidate_before = pointer.read_text()

        environ = {
            **os.environ,
            **as_user(),
            "LAKEHOUSE_ML_ROOT": str(project),
            "KEDRO_DISABLE_TELEMETRY": "1",
            "COLUMNS": "200",
            # MLflow's client retries a lost server for minutes by default; the run's own limits.
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
        }
        environ.pop("SPARK_REMOTE", None)
        process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("kedro")),
                "run",
                "--env",
                env,
                "--pipelines",
                "training,evaluation,registration,auto_promotion",
            ],
            cwd=project,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines: list[str] = []
        killed = threading.Event()

        def watch() -> None:
            for line in process.stdout:
                lines.append(line)
                if "Completed node: training.refit_candidate" in line and not killed.is_set():
                    server.stop()
                    killed.set()

        reader = threading.Thread(target=watch, daemon=True)
        reader.start()
        process.wait(timeout=900)
        reader.join(timeout=30)
        log = " ".join("".join(lines).split())
        assert killed.is_set(), log[-4000:]
        assert process.returncode != 0, log[-4000:]
        assert "Completed node: training.log_candidate" not in log

        server = start_mlflow_server(root, postgres, port=server.port, database="mlflow_lost")  # the same server again
        with on_server(server.url) as client:
            assert aliases(client, model_of("team_b")) == before
            assert [v.version for v in client.search_model_versions(f"name = '{model_of('team_b')}'")] == [str(version)]
        assert pointer.read_text() == candidate_before  # the candidate pointer was not half-updated
    finally:
        server.stop()
