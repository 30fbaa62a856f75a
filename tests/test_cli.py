"""End-to-end: the real `kedro run` CLI on a small simulated business, in a copy of the project."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable
from mlflow import MlflowClient

from lakehouse_ml.datasets import PandasDeltaDataset
from lakehouse_ml.governance import os_user, policy_sha256
from lakehouse_ml.pipelines.training_set.nodes import SPEC_PROPERTY
from tests.helpers import PROJECT_ROOT
from tests.pipelines.registration.releases import audit_rows, log_candidate, registry_state, release_store, run_release  # noqa: F401 (fixture)

# The whole default loop on a small business: written to the copy's conf/local (the default run
# environment, like a user's personal overrides), so a plain `kedro run` uses it.
SMALL_LOOP = """
simulate: {n_customers: 400, n_days: 60}
ingest: {quarantine_gate: {max_rate: 0.2, min_rows: 50}}
training_set: {spine: {warmup_days: 20, every_days: 5, horizon_days: 14, active_lookback_days: 30}}
tuning:
  n_folds: 2
  test_cutoffs: 1
  gap_cutoffs: 2
  n_trials: 4
  n_jobs: 1
  pruner: {n_startup_trials: 2}
  search_space:
    random_forest: {n_estimators: {low: 10, high: 30}}
training: {min_slice_rows: 30, importance: {max_rows: 500, n_repeats: 1}}
evaluation:  # limits a 400-customer business can meet; the gates themselves are tested elsewhere
  floors: {roc_auc: 0.55, pr_auc: 0.2}
  ceilings: {log_loss: 0.8, calibration_error: 0.3}
  slices: {floors: {roc_auc: 0.5}}
  serving: {latency_budget_ms: {single_row: 2000, batch_100: 2000}}
inference: {max_rejected_rate: 0.5}
"""
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def kedro(
    project: Path, *args: str, timeout: int = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run the kedro CLI of this environment in ``project`` (with ``env`` added to the environment); return the result."""
    env = {
        **os.environ,
        **(env or {}),
        "LAKEHOUSE_ML_ROOT": str(project),
        "KEDRO_DISABLE_TELEMETRY": "1",
        "COLUMNS": "200",
    }
    env.pop("SPARK_REMOTE", None)
    kedro_bin = Path(sys.executable).with_name("kedro")
    result = subprocess.run(
        [str(kedro_bin), *args], cwd=project, env=env, capture_output=True, text=True, timeout=timeout
    )
    return result


def versions(project: Path, catalog: str) -> dict[str, int]:
    root = project / "data" / "lakehouse" / catalog
    return {
        str(path.relative_to(root)): DeltaTable(str(path)).version()
        for path in sorted(root.glob("*/*"))
        if (path / "_delta_log").is_dir()
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the project (configuration only; the package is installed) with a fresh data/."""
    copy = tmp_path_factory.mktemp("project")
    shutil.copy(PROJECT_ROOT / "pyproject.toml", copy)
    shutil.copytree(PROJECT_ROOT / "conf", copy / "conf", ignore=shutil.ignore_patterns("credentials*"))
    (copy / "conf" / "local" / "parameters_small_loop.yml").write_text(SMALL_LOOP)
    (copy / "src").mkdir()  # kedro checks the folder exists; the package itself is installed
    (copy / "data").mkdir()
    return copy


def test_kedro_run_builds_the_lakehouse_and_reruns_as_a_no_op(project, tmp_path):
    first = kedro(project, "run")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    log = first.stdout + first.stderr
    summary = re.search(r"ingest: 4 sources, (\d+) batches: bronze (\d+) = inserted", log)
    assert summary, log[-3000:]
    assert "Spark engine stopped" in log

    tables = versions(project, "dev")
    for table in (
        "bronze/orders",
        "silver/orders",
        "quarantine/orders",
        "gold/customer_daily_activity",
        "monitoring/ingest_audit",
        "silver/customers",
        "silver/sessions",
        "silver/tickets",
    ):
        assert table in tables, table
    audit = PandasDeltaDataset(filepath=str(project / "data/lakehouse/dev/monitoring/ingest_audit")).load()
    assert audit["balanced"].all()
    outcomes = audit[["inserted", "updated", "duplicate", "quarantined"]].sum(axis=1)
    assert (audit["bronze_rows"] == outcomes).all()
    assert (len(audit), audit["bronze_rows"].sum()) == (int(summary.group(1)), int(summary.group(2)))
    assert audit["bronze_rows"].sum() > 3_000
    assert (project / "mlflow.db").is_file()  # kedro-mlflow tracked the run in the project's SQLite store
    # The loop went on to a tuned, logged candidate model.
    candidate = json.loads((project / "data/06_models/dev/candidate.json").read_text())
    assert candidate["training_set"]["version"] == tables["ml/training_set"]
    assert 0.0 <= candidate["test_metrics"]["roc_auc"] <= 1.0
    study = json.loads((project / "data/06_models/dev/tuning_study_result.json").read_text())
    assert study["n_trials"] == 4 and study["trials_this_run"] == 4
    assert "tuning churn_tuning_v1 finished" in log
    assert (project / "data/08_reporting/dev/candidate/plots/roc.png").is_file()
    # ... evaluated, registered as the challenger, promoted by the dev release step, and used to score.
    gates = json.loads((project / "data/08_reporting/dev/evaluation/gates.json").read_text())
    assert gates["passed"], gates["summary"]
    # Each node wrote the id of its own MLflow run (its mlflow_node_run input): the candidate is
    # training.log_candidate's run, the report links to evaluation.apply_gates' copy of itself.
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    candidate_run, evaluation_run = client.get_run(candidate["run_id"]), client.get_run(gates["evaluation_run_id"])
    assert candidate_run.info.run_name == "training.log_candidate"
    assert candidate_run.data.tags["git_sha"] == candidate["git_sha"] and candidate["env"] == "local"
    assert evaluation_run.info.run_name == "evaluation.apply_gates"
    assert gates["report_uri"] == f"runs:/{gates['evaluation_run_id']}/reports/gates.json"
    assert client.download_artifacts(gates["evaluation_run_id"], "reports/gates.json", str(tmp_path))
    moves = PandasDeltaDataset(filepath=str(project / "data/lakehouse/dev/ml/model_promotions")).load()
    assert sorted(zip(moves["action"], moves["alias"], moves["to_version"].fillna("-"))) == [
        ("promote", "challenger", "-"),
        ("promote", "champion", "1"),
        ("register_challenger", "challenger", "1"),
    ]
    assert "automatic promotion in the default run (promotion.auto_promote)" in set(moves["reason"])
    # The release context names the kedro run, not the release node's child run.
    [kedro_run_id] = set(moves["kedro_run_id"])
    assert "mlflow.parentRunId" not in client.get_run(kedro_run_id).data.tags
    assert candidate_run.data.tags["mlflow.parentRunId"] == kedro_run_id
    predictions = PandasDeltaDataset(filepath=str(project / "data/lakehouse/dev/ml/churn_predictions")).load()
    assert len(predictions) > 0 and set(predictions["model_version"]) == {"1"}
    assert set(predictions["model_alias"]) == {"champion"} and predictions["probability"].between(0, 1).all()
    assert re.search(r"inference: dev.ml.churn_classifier version 1 \(champion\) on \d{4}-\d{2}-\d{2}: \d+ rows", log)
    # ... and monitored: one window of the champion against its baseline, a report, no action yet
    # (every rule needs at least two breaching windows).
    drift = PandasDeltaDataset(filepath=str(project / "data/lakehouse/dev/monitoring/drift_metrics")).load()
    assert set(drift["model_version"]) == {"1"} and drift["window_start"].nunique() == 1
    assert {"psi", "js_distance"} <= set(drift["metric"]) and "__prediction__" in set(drift["feature"])
    assert (project / "data/08_reporting/dev/monitoring/report.html").is_file()
    assert (project / "data/08_reporting/dev/monitoring/drift_over_time.png").is_file()
    assert re.search(r"monitoring: windows=1, .*actions.fired=0", log)
    tables = versions(project, "dev")

    second = kedro(project, "run")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "nothing new to ingest" in second.stdout + second.stderr
    # The stored study resumes: its budget is spent, so no new trial runs.
    assert json.loads((project / "data/06_models/dev/tuning_study_result.json").read_text())["trials_this_run"] == 0
    log = second.stdout + second.stderr
    assert "same fingerprint" in log  # the refit is the released model
    assert "no 'challenger' to promote; 'champion' stays version 1" in log
    # Unchanged input: no table changes and no new release; batch scoring replaces its own rows,
    # monitoring its windows' metrics, and the refit candidate has its own baseline.
    rescored = {
        "ml/churn_predictions",
        "ml/rejected_predictions",
        "_work/inference_scored_rows",
        "_work/monitoring_served_inputs",
        "monitoring/baselines",
        "monitoring/drift_metrics",
        "monitoring/performance_metrics",
        "monitoring/data_quality",
    }
    assert {t: v for t, v in versions(project, "dev").items() if t not in rescored} == {
        t: v for t, v in tables.items() if t not in rescored
    }
    again = PandasDeltaDataset(filepath=str(project / "data/lakehouse/dev/ml/churn_predictions")).load()
    assert (
        len(again) == len(predictions) and not again.duplicated(["customer_id", "scoring_date", "model_version"]).any()
    )


def test_staging_environment_never_touches_dev_tables(project):
    before = versions(project, "dev")
    result = kedro(
        project,
        "run",
        "--env",
        "staging",
        "--pipelines",
        "simulate,ingest",
        "--params",
        "simulate.n_customers=100,simulate.n_days=7",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert versions(project, "staging")["silver/orders"] == 0
    assert versions(project, "dev") == before
    assert (project / "data/01_raw/landing/staging/orders").is_dir()


def test_full_rebuild_from_the_cli(project):
    before = versions(project, "dev")
    result = kedro(project, "run", "--pipeline", "ingest", "--params", "ingest.full_rebuild=true")
    assert result.returncode == 0, result.stderr[-3000:]
    after = versions(project, "dev")
    assert after["bronze/orders"] == before["bronze/orders"] + 1
    assert after["silver/orders"] == before["silver/orders"] + 1


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serving(project: Path, env: str, token: str, variables: dict[str, str] | None = None):
    """`python -m lakehouse_ml.serving --env <env>` on a free port (``variables`` added to its
    environment), ready; yields its URL and, once stopped (SIGTERM), its output in ``output[0]``."""
    import signal
    import time

    import httpx

    port = _free_port()
    extra = variables or {}
    variables = {
        **os.environ,
        "LAKEHOUSE_ML_ROOT": str(project),
        "LAKEHOUSE_ML_SERVING_TOKEN": token,
        "KEDRO_DISABLE_TELEMETRY": "1",
    }
    for variable in ("SPARK_REMOTE", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):  # the tests' own store
        variables.pop(variable, None)
    variables.update(extra)
    server = subprocess.Popen(
        [sys.executable, "-m", "lakehouse_ml.serving", "--env", env, "--port", str(port)],
        cwd=project,
        env=variables,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url, output = f"http://127.0.0.1:{port}", []
    try:
        deadline, ready = time.monotonic() + 120, None
        while time.monotonic() < deadline:
            try:
                ready = httpx.get(f"{url}/ready", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.stdout.read()[-3000:]
            time.sleep(0.5)
        else:
            pytest.fail(f"the service was not ready within 120 s: {ready.text if ready is not None else 'no answer'}")
        yield url, output
    finally:
        server.send_signal(signal.SIGTERM)
        output.append(server.communicate(timeout=60)[0])


def test_the_documented_serve_command_serves_the_champion_and_logs_to_delta(project):
    """After the default run: `python -m lakehouse_ml.serving --env local` answers with the champion
    from the published online store, and its inference log reaches Delta when it is stopped."""
    import httpx

    predictions = PandasDeltaDataset(filepath=str(project / "data/lakehouse/dev/ml/churn_predictions")).load()
    customers = sorted(predictions["customer_id"])[:3]
    token = "e2e-secret-token"
    with serving(project, "local", token) as (url, output):
        assert httpx.post(f"{url}/v1/score/customers", json={"customer_ids": customers}, timeout=10).status_code == 401
        answer = httpx.post(
            f"{url}/v1/score/customers",
            json={"customer_ids": customers},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        scored = {p["customer_id"]: p for p in body["predictions"]}
        refused = {e["customer_id"] for e in body.get("errors", [])}
        assert set(scored) | refused == set(customers) and scored, body
        assert {(p["model_version"], p["role"]) for p in scored.values()} == {("1", "champion")}
        assert all(0.0 <= p["probability"] <= 1.0 for p in scored.values())
        assert set(httpx.get(f"{url}/version", timeout=5).json()) == {"service"}  # no token: the package version only
        version = httpx.get(f"{url}/version", headers={"Authorization": f"Bearer {token}"}, timeout=5).json()
        assert "dev.ml.churn_classifier" in json.dumps(version)
        assert str(project) not in json.dumps(version) and "online_store.db" not in json.dumps(
            version
        )  # no local paths
    assert token not in output[0]  # no secret in the logs
    log = PandasDeltaDataset(filepath=str(project / "data/lakehouse/dev/monitoring/inference_log")).load()
    assert set(log["customer_id"]) >= set(scored), output[0][-3000:]
    assert not log.duplicated(["request_id", "row_index", "role"]).any()


# ---------------------------------------------------------------- only orders delivered, your own table
# Every optional source absent (customers, sessions, tickets point at empty folders), the profile
# table disabled and a third feature table declared, by configuration only, in an environment of its
# own: one default loop run shows both that a table can be switched off and that a new one goes
# through every stage with no code change.
ORDERS_ONLY_CATALOG = "\n".join(
    f"""{source}_landing@spark:
  type: lakehouse_ml.datasets.LandingDataset
  path: ${{globals:landing_root}}/none/{source}
  filename_suffix: {suffix}
  dataset: {{type: lakehouse_ml.datasets.LandingFileDataset, file_format: {fmt}}}
"""
    for source, suffix, fmt in (
        ("customers", ".csv", "csv"),
        ("sessions", ".jsonl", "json"),
        ("tickets", ".csv", "csv"),
    )
)


# Declared in this environment only: other windows over the same gold table.
ORDER_RHYTHM = """
feature_tables:
  order_rhythm:
    description: Orders and spend over two and eight weeks.
    owner: tests
    entity_keys: [customer_id]
    timestamp_key: feature_ts
    ingested_at_key: ingested_at
    grain: customer x day
    refresh: daily
    source: gold.customer_daily_activity
    kind: daily_windows
    features:
      orders_14d: {window: 14 days, unit: orders, freshness: 2 days, null_policy: {impute: 0}, range: [0, null], compute: {sum: orders}}
      orders_56d: {window: 56 days, unit: orders, freshness: 2 days, null_policy: {impute: 0}, range: [0, null], compute: {sum: orders}}
      net_spend_56d: {window: 56 days, unit: EUR, freshness: 2 days, null_policy: {impute: 0}, range: [0, null], compute: {sum: net_amount_eur}}
      spend_per_order_56d: {window: 56 days, unit: EUR, freshness: 2 days, null_policy: keep, range: [0, null], compute: {ratio: [net_spend_56d, orders_56d]}}
"""
RHYTHM = [
    "order_rhythm__orders_14d",
    "order_rhythm__orders_56d",
    "order_rhythm__net_spend_56d",
    "order_rhythm__spend_per_order_56d",
]


@pytest.fixture(scope="module")
def orders_only(tmp_path_factory) -> Path:
    """A copy of the project whose `orders_only` environment has only orders (the default loop run in it)."""
    copy = tmp_path_factory.mktemp("orders_only")
    shutil.copy(PROJECT_ROOT / "pyproject.toml", copy)
    shutil.copytree(PROJECT_ROOT / "conf", copy / "conf", ignore=shutil.ignore_patterns("credentials*"))
    env = copy / "conf" / "orders_only"
    env.mkdir()
    (env / "parameters_small_loop.yml").write_text(SMALL_LOOP)
    (env / "catalog.yml").write_text(ORDERS_ONLY_CATALOG)
    (env / "feature_tables").mkdir()
    (env / "feature_tables" / "customer_profile.yml").write_text(
        "feature_tables:\n  customer_profile:\n    enabled: false\n"
    )
    (env / "feature_tables" / "order_rhythm.yml").write_text(ORDER_RHYTHM)
    (copy / "src").mkdir()
    (copy / "data").mkdir()
    return copy


@pytest.fixture(scope="module")
def orders_only_run(orders_only) -> tuple[Path, str]:
    """The default loop run once in the `orders_only` environment: the project and its log."""
    result = kedro(orders_only, "run", "--env", "orders_only", timeout=900)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    return orders_only, " ".join(log.split())  # the log wraps long lines


def test_the_default_loop_runs_with_only_orders_delivered(orders_only_run):
    project, log = orders_only_run
    assert re.search(r"ingest: 1 sources, \d+ batches", log), log[-3000:]  # orders alone had files
    lake = project / "data/lakehouse/dev"  # the environment keeps base's catalog
    training_set = PandasDeltaDataset(filepath=str(lake / "ml/training_set")).load()
    assert not [c for c in training_set.columns if c.startswith("customer_profile__")]
    assert training_set["customer_activity__orders_30d"].notna().any()
    # The disabled table is read by no stage: not in the training set's lineage, never refreshed.
    spec = json.loads(DeltaTable(str(lake / "ml/training_set")).metadata().configuration[SPEC_PROPERTY])
    assert sorted(spec["sources"]) == ["customer_activity", "order_rhythm", "orders_silver"]
    refreshes = PandasDeltaDataset(filepath=str(lake / "monitoring/feature_refreshes")).load()
    assert "customer_profile" not in set(refreshes["table"])
    # The model's slices over profile inputs are left out, saying so; the run went on to release and score.
    assert "slice 'country' left out: 'customer_profile__country' is not a model input here" in log
    gates = json.loads((project / "data/08_reporting/dev/evaluation/gates.json").read_text())
    assert gates["passed"], gates["summary"]
    predictions = PandasDeltaDataset(filepath=str(lake / "ml/churn_predictions")).load()
    assert len(predictions) > 0 and set(predictions["model_version"]) == {"1"}
    drift = PandasDeltaDataset(filepath=str(lake / "monitoring/drift_metrics")).load()
    assert len(drift) > 0 and set(drift["slice"]) == {"all"}
    profile = lake / "features/customer_profile"
    assert not profile.exists() or PandasDeltaDataset(filepath=str(profile)).load().empty
    # The scoring service answers from the online store of the tables there are.
    import httpx

    customers = sorted(predictions["customer_id"])[:3]
    with serving(project, "orders_only", "orders-only-token") as (url, _):
        answer = httpx.post(
            f"{url}/v1/score/customers",
            json={"customer_ids": customers},
            headers={"Authorization": "Bearer orders-only-token"},
            timeout=10,
        )
    assert answer.status_code == 200, answer.text
    assert {p["model_version"] for p in answer.json()["predictions"]} == {"1"}, answer.json()


def test_a_table_declared_in_an_environment_goes_through_the_whole_loop(orders_only_run):
    """order_rhythm exists only as conf/orders_only/feature_tables/order_rhythm.yml."""
    from lakehouse_ml.features.tables import parsed_contracts
    from tests.helpers import project_config

    project, _ = orders_only_run
    lake = project / "data/lakehouse/dev"
    contract = parsed_contracts(
        project_config("orders_only", conf_source=project / "conf")["parameters"]["feature_tables"]
    )["order_rhythm"]
    # Built, validated and stamped with its contract; its refresh recorded.
    table = DeltaTable(str(lake / "features/order_rhythm"))
    assert table.metadata().configuration["lakehouse_ml.contract.hash"] == contract.hash
    rows = table.to_pandas()
    assert len(rows) > 0 and not rows.duplicated(["customer_id", "feature_ts"]).any()
    refreshes = PandasDeltaDataset(filepath=str(lake / "monitoring/feature_refreshes")).load()
    assert list(refreshes.loc[refreshes["table"] == "order_rhythm", "mode"]) == ["full"]
    # Looked up point in time into the training set, with its version and contract in the lineage.
    training_set = PandasDeltaDataset(filepath=str(lake / "ml/training_set")).load()
    assert set(RHYTHM) <= set(training_set.columns) and training_set["order_rhythm__orders_56d"].notna().any()
    spec = json.loads(DeltaTable(str(lake / "ml/training_set")).metadata().configuration[SPEC_PROPERTY])
    assert spec["sources"]["order_rhythm"]["contract_hash"] == contract.hash
    assert spec["lookups"]["order_rhythm"] == {
        "features": contract.feature_names,
        "lookback_window": None,
        "filter_by_ingested_at": True,
    }
    # Published online, scored in batch with its version recorded, monitored for drift.
    state = _online_state(project, "order_rhythm")
    assert state is not None and state["contract_hash"] == contract.hash, state
    predictions = PandasDeltaDataset(filepath=str(lake / "ml/churn_predictions")).load()
    assert set(RHYTHM) <= set(json.loads(predictions["features"].iloc[0]))
    assert all(dict(versions).get("order_rhythm") is not None for versions in predictions["feature_table_versions"])
    drift = PandasDeltaDataset(filepath=str(lake / "monitoring/drift_metrics")).load()
    assert set(RHYTHM) & set(drift["feature"]), sorted(set(drift["feature"]))
    # A backfill of that table alone over all its feature days (day D's row has feature_ts D+1):
    # every row recomputed to the same values and audited; the other table untouched.
    before = DeltaTable(str(lake / "features/customer_activity")).version()
    days = (rows["feature_ts"] - pd.Timedelta(days=1)).dt.date
    result = kedro(
        project,
        "run",
        "--env",
        "orders_only",
        "--pipeline",
        "features",
        "--params",
        f"features.backfill.start={days.min()},features.backfill.end={days.max()},features.backfill.tables=[order_rhythm]",
        timeout=600,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    refreshes = PandasDeltaDataset(filepath=str(lake / "monitoring/feature_refreshes")).load()
    backfill = refreshes[refreshes["table"] == "order_rhythm"].sort_values("refreshed_at").iloc[-1]
    assert (backfill["mode"], backfill["rows_upserted"], backfill["rows_deleted"]) == ("backfill", len(rows), 0)
    assert DeltaTable(str(lake / "features/customer_activity")).version() == before
    keys = ["customer_id", "feature_ts"]
    after = DeltaTable(str(lake / "features/order_rhythm")).to_pandas()
    pd.testing.assert_frame_equal(
        after.sort_values(keys).reset_index(drop=True), rows[after.columns].sort_values(keys).reset_index(drop=True)
    )


def _online_state(project: Path, table: str) -> dict | None:
    """The online store's state of ``table`` (source version, contract hash, as-of)."""
    from lakehouse_ml.online import SQLiteOnlineStore

    store = SQLiteOnlineStore(str(project / "data/07_model_output/dev/online_store.db"))
    try:
        return store.table_state(table)
    finally:
        store.close()


# ---------------------------------------------------------------- release governance through the CLI
# A challenger registered in-process (tiny candidate run, the registration pipeline) in a fresh
# MLflow store that is also the copy's own (mlflow.yml: ${project_root:mlflow.db}); then the real
# `kedro run --pipeline promotion`.


@pytest.fixture
def release_project(release_store, monkeypatch) -> Path:  # noqa: F811 - the fixture imported above
    """A copy of the project's configuration in the release store's folder (data, mlflow.db)."""
    shutil.copy(PROJECT_ROOT / "pyproject.toml", release_store)
    shutil.copytree(PROJECT_ROOT / "conf", release_store / "conf", ignore=shutil.ignore_patterns("credentials*"))
    (release_store / "src").mkdir()
    return release_store


def _challenger(root: Path, env: str, approved_by: str | None = None) -> None:
    """Version 1 of <env>.ml.churn_classifier as the challenger, approved by ``approved_by``."""
    from mlflow import MlflowClient

    from lakehouse_ml.pipelines.registration.pipeline import create_pipeline as registration

    log_candidate(root, catalog=env)
    run_release(root, registration(), env=env)
    if approved_by:
        MlflowClient().set_model_version_tag(f"{env}.ml.churn_classifier", "1", "approved_by", approved_by)
    assert registry_state(env)["aliases"] == {"challenger": "1"}


def _refused(result: subprocess.CompletedProcess) -> str:
    log = result.stdout + result.stderr
    assert result.returncode != 0, log[-3000:]
    assert "plan_promotion" not in log  # refused before any node ran
    return " ".join(log.split())  # the log wraps long lines


def test_staging_refuses_a_command_line_override_of_promotion_approval(release_project):
    _challenger(release_project, "staging")  # not approved: the override would have promoted it
    result = kedro(
        release_project,
        "run",
        "--env",
        "staging",
        "--pipeline",
        "promotion",
        "--params",
        "promotion.require_approval=false",
    )
    log = _refused(result)
    assert (
        "promotion.require_approval is release policy of env 'staging' and cannot be overridden at run time; "
        "change it in conf/staging/parameters_promotion.yml (reviewed like code)"
    ) in log
    assert registry_state("staging")["aliases"] == {"challenger": "1"}
    assert [row["action"] for row in audit_rows(release_project, "staging")] == ["register_challenger"]


def test_prod_refuses_an_actor_parameter_and_a_promotion_by_its_approver(release_project):
    _challenger(release_project, "prod", approved_by=os_user())
    # Naming another actor was how the approver could promote their own approval.
    result = kedro(
        release_project, "run", "--env", "prod", "--pipeline", "promotion", "--params", "promotion.actor=someone-else"
    )
    assert (
        "promotion.actor cannot be set (--params promotion.actor): the actor of a release is the identity this process runs as"
        in _refused(result)
    )
    assert registry_state("prod")["aliases"] == {"challenger": "1"}

    # Nor do the variables a user sets make them someone else (a local store authenticates nobody).
    spoofed = {name: "someone-else" for name in ("USER", "LOGNAME", "LAKEHOUSE_ML_ACTOR", "MLFLOW_TRACKING_USERNAME")}
    result = kedro(release_project, "run", "--env", "prod", "--pipeline", "promotion", env=spoofed)
    log = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert (
        f"was approved by '{os_user()}', who is also promoting it (the actor is the identity this run has: '{os_user()}', os_user)"
        in log
    )
    assert "promotion.forbid_self_approval requires a second person" in log
    assert registry_state("prod")["aliases"] == {"challenger": "1"}
    assert [row["action"] for row in audit_rows(release_project, "prod")] == ["register_challenger"]


def test_a_prod_promotion_records_actor_host_and_policy_also_in_an_existing_audit_table(release_project):
    from deltalake import write_deltalake

    from lakehouse_ml.release import AUDIT_COLUMNS

    # ml.model_promotions as written before release governance: the 13 columns of then, one row.
    table = release_project / "data/lakehouse/prod/ml/model_promotions"
    earlier = {c: [None] for c in AUDIT_COLUMNS[:13]} | {
        "event_id": ["e0"],
        "action": ["promote"],
        "actor": ["old-actor"],
    }
    write_deltalake(
        str(table),
        pd.DataFrame(earlier)
        .astype("string")
        .assign(event_ts=pd.Timestamp("2026-01-01", tz="UTC"))
        .astype({"event_ts": "datetime64[us, UTC]"}),
    )
    _challenger(release_project, "prod", approved_by="a-reviewer")

    result = kedro(
        release_project, "run", "--env", "prod", "--pipeline", "promotion", "--params", "promotion.reason=June release"
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert registry_state("prod")["aliases"] == {"champion": "1"}
    rows = [
        row for row in audit_rows(release_project, "prod") if row["action"] == "promote" and row["event_id"] != "e0"
    ]
    assert {(row["alias"], row["to_version"]) for row in rows} == {("champion", "1"), ("challenger", None)}
    for row in rows:
        assert (row["actor"], row["actor_source"], row["host"], row["via"]) == (
            os_user(),
            "os_user",
            socket.gethostname(),
            "promotion",
        )
        assert (row["approved_by"], row["reason"], row["catalog"]) == ("a-reviewer", "June release", "prod") and row[
            "kedro_run_id"
        ]
        policy = json.loads(row["policy"])
        assert policy["env"] == "prod" and row["policy_sha256"] == policy_sha256(policy)
        assert (
            policy["settings"]["promotion.forbid_self_approval"] is True
            and policy["settings"]["promotion.require_approval"] is True
        )
        assert policy["sources"]["promotion.forbid_self_approval"][0] == "conf/prod/parameters_promotion.yml"
    [old] = [row for row in audit_rows(release_project, "prod") if row["event_id"] == "e0"]
    assert (
        old["actor"] == "old-actor" and old["host"] is None and old["policy"] is None
    )  # the table evolved, its rows kept
    tags = registry_state("prod")["versions"]["1"]["tags"]
    assert (tags["promotion.actor"], tags["promotion.host"], tags["promotion.policy_sha256"]) == (
        os_user(),
        socket.gethostname(),
        rows[0]["policy_sha256"],
    )
    assert json.loads(tags["promotion.policy"])["promotion.forbid_self_approval"] is True
