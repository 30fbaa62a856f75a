"""NodeRunHooks against a real MLflow store (SQLite in tmp) and real Kedro runners."""

from __future__ import annotations

import json
import logging
import threading

import mlflow
import pandas as pd
import pytest
from deltalake import DeltaTable, write_deltalake
from kedro.framework.hooks import _create_hook_manager, hook_impl
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node
from kedro.runner import SequentialRunner, ThreadRunner
from kedro_mlflow.io.metrics import MlflowMetricsHistoryDataset
from mlflow import MlflowClient

from lakehouse_ml.datasets.delta import PandasDeltaDataset
from lakehouse_ml.hooks import NodeRunHooks

CONTRACT_HASH = "0123456789abcdef"
RUN_PARAMS = {"env": "test", "pipeline_names": ["tiny"], "project_path": None}

# Set by the ThreadRunner test: both metric nodes wait for each other, proving they ran in parallel.
_BARRIER: threading.Barrier | None = None


def _meet() -> None:
    if _BARRIER is not None:
        _BARRIER.wait(timeout=20)


def metrics_a(table: pd.DataFrame):
    _meet()
    return {"rows_a": {"value": float(len(table)), "step": 0}}, len(table)


def metrics_b(table: pd.DataFrame):
    _meet()
    return {"sum_b": {"value": float(table["x"].sum()), "step": 0}}, int(table["x"].sum())


def combine(count: int, total: int) -> int:
    return count + total


def explode(count: int) -> int:
    raise ValueError("boom at the first line\nsecret row values here")


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh SQLite store and experiment (artifacts in tmp); the fluent stack left empty."""
    monkeypatch.chdir(tmp_path)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.create_experiment("tracking_test", artifact_location=(tmp_path / "artifacts").as_uri())
    # set_experiment exports MLFLOW_EXPERIMENT_ID: monkeypatch puts the variable back after the test.
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment)
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
    mlflow.set_experiment(experiment_id=experiment)
    yield MlflowClient()
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(previous)


@pytest.fixture
def table(tmp_path):
    """A small lakehouse table at version 2 with a feature-contract hash property."""
    path = tmp_path / "data" / "lakehouse" / "dev" / "silver" / "t"
    write_deltalake(str(path), pd.DataFrame({"x": [1, 2]}))
    write_deltalake(str(path), pd.DataFrame({"x": [3]}), mode="append")
    # As the feature pipelines stamp contracts (DeltaMetadataDataset): version 2.
    DeltaTable(str(path)).alter.set_table_properties(
        {"lakehouse_ml.contract.hash": CONTRACT_HASH}, raise_if_not_exists=False
    )
    return path


def _catalog(table_path) -> DataCatalog:
    return DataCatalog(
        {
            "t": PandasDeltaDataset(filepath=str(table_path)),
            "metrics_a": MlflowMetricsHistoryDataset(),
            "metrics_b": MlflowMetricsHistoryDataset(),
            "count": MemoryDataset(),
            "total": MemoryDataset(),
            "result": MemoryDataset(),
        }
    )


def _pipeline() -> Pipeline:
    return Pipeline(
        [
            node(metrics_a, "t", ["metrics_a", "count"], name="metrics_a", tags=["quality"]),
            node(metrics_b, "t", ["metrics_b", "total"], name="metrics_b"),
            node(combine, ["count", "total"], "result", name="combine", namespace=None),
        ]
    )


class KedroMlflowNodeHook:
    """What kedro-mlflow's ``MlflowHook.before_node_run`` does for each node (kedro_mlflow/framework/
    hooks/mlflow_hook.py): re-enter the pipeline's run in the node's thread (not nested; "already
    active" is ignored only for that run), then log the node's ``params:`` inputs to the active run."""

    def __init__(self, parent_id: str) -> None:
        self.parent_id = parent_id

    @hook_impl
    def before_node_run(self, inputs: dict) -> None:
        try:
            mlflow.start_run(run_id=self.parent_id, nested=False)
        except Exception as error:
            if f"Run with UUID {self.parent_id} is already active" not in str(error):
                raise
        for name, value in inputs.items():
            if name.startswith("params:"):
                mlflow.log_param(name[len("params:") :], value)


def _run(runner, pipeline, catalog, hooks=None):
    """What a KedroSession does around the runner, with kedro-mlflow's parent run started by hand and
    its per-node re-entry (KedroMlflowNodeHook)."""
    manager = _create_hook_manager()
    manager.register(hooks or NodeRunHooks())
    if mlflow.active_run() is not None:
        manager.register(KedroMlflowNodeHook(mlflow.active_run().info.run_id))
    manager.hook.after_catalog_created(
        catalog=catalog, conf_catalog={}, conf_creds={}, parameters={}, save_version=None, load_versions=None
    )
    manager.hook.before_pipeline_run(run_params=RUN_PARAMS, pipeline=pipeline, catalog=catalog)
    try:
        runner.run(pipeline, catalog, manager)
    except Exception as error:
        manager.hook.on_pipeline_error(error=error, run_params=RUN_PARAMS, pipeline=pipeline, catalog=catalog)
        raise
    manager.hook.after_pipeline_run(run_params=RUN_PARAMS, run_result={}, pipeline=pipeline, catalog=catalog)


def _children(client: MlflowClient, parent_id: str) -> dict[str, mlflow.entities.Run]:
    parent = client.get_run(parent_id)
    runs = client.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    return {run.info.run_name: run for run in runs}


def _all_runs(client: MlflowClient) -> list:
    experiment = client.get_experiment_by_name("tracking_test")
    return client.search_runs([experiment.experiment_id])


@pytest.mark.parametrize("runner", ["sequential", "thread"])
def test_one_child_run_per_node_with_tags_metrics_inputs_and_environment(store, table, runner):
    global _BARRIER
    catalog = _catalog(table)
    parent = mlflow.start_run(run_name="tiny")
    if runner == "thread":
        _BARRIER = threading.Barrier(2)
        kedro_runner = ThreadRunner(max_workers=2)
    else:
        kedro_runner = SequentialRunner()
    try:
        _run(kedro_runner, _pipeline(), catalog)
    finally:
        _BARRIER = None
    # The hook leaves the parent alone (kedro-mlflow ends it) and the thread's stack as it was.
    assert mlflow.active_run().info.run_id == parent.info.run_id
    mlflow.end_run()

    children = _children(store, parent.info.run_id)
    assert set(children) == {"metrics_a", "metrics_b", "combine"}
    # Nothing else was created: no stray runs from metric datasets saved outside a run.
    assert len(_all_runs(store)) == 4
    for run in children.values():
        tags = run.data.tags
        assert run.info.status == "FINISHED"
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert tags["status"] == "FINISHED"
        assert tags["pipeline"] == "tiny"
        assert tags["env"] == "test"
        assert tags["project"] == "lakehouse_ml"
        assert tags["run_type"] == "pipeline"
        assert tags["namespace"] == ""
        assert tags["git_sha"]
        assert run.data.metrics["duration_s"] >= 0
    assert children["metrics_a"].data.tags["node_tags"] == "quality"

    # Each node's metric dataset logged into that node's own run, nowhere else.
    assert children["metrics_a"].data.metrics["rows_a"] == 3.0
    assert "sum_b" not in children["metrics_a"].data.metrics
    assert children["metrics_b"].data.metrics["sum_b"] == 6.0
    assert "rows_a" not in children["metrics_b"].data.metrics
    assert not {"rows_a", "sum_b"} & set(store.get_run(parent.info.run_id).data.metrics)

    # The Delta input: table name from its path, version as digest, contract hash.
    for name in ("metrics_a", "metrics_b"):
        run = children[name]
        assert run.data.tags["input.t.version"] == "2"
        assert run.data.tags["input.t.contract_hash"] == CONTRACT_HASH
        [dataset_input] = run.inputs.dataset_inputs
        assert dataset_input.dataset.name == "dev.silver.t"
        assert dataset_input.dataset.digest == "2"
        input_tags = {tag.key: tag.value for tag in dataset_input.tags}
        assert input_tags["mlflow.data.context"] == name
        assert input_tags["contract_hash"] == CONTRACT_HASH
        assert json.loads(dataset_input.dataset.source)["path"] == table.resolve().as_posix()
    assert not children["combine"].inputs.dataset_inputs

    # environment.json on the parent, once.
    environment = mlflow.artifacts.load_dict(f"runs:/{parent.info.run_id}/environment.json")
    assert environment["python"]
    assert set(environment["packages"]) >= {"kedro", "kedro-mlflow", "mlflow", "deltalake", "pandas"}
    assert environment["packages"]["mlflow"] == mlflow.__version__
    assert set(environment["spark_engine"]) >= {"mode", "remote"}


def test_thread_runner_puts_parallel_nodes_in_sibling_runs(store, table):
    """Under ThreadRunner the two parallel nodes are siblings, not nested in each other."""
    global _BARRIER
    parent = mlflow.start_run()
    _BARRIER = threading.Barrier(2)
    try:
        _run(ThreadRunner(max_workers=2), _pipeline(), _catalog(table))
    finally:
        _BARRIER = None
    mlflow.end_run()
    children = _children(store, parent.info.run_id)
    assert children["metrics_a"].info.run_id != children["metrics_b"].info.run_id
    assert {run.data.tags["mlflow.parentRunId"] for run in children.values()} == {parent.info.run_id}


@pytest.mark.parametrize("runner", [SequentialRunner, lambda: ThreadRunner(max_workers=2)])
def test_failing_node_is_failed_with_error_class_and_first_line(store, table, runner):
    catalog = _catalog(table)
    pipeline = Pipeline(
        [
            node(metrics_b, "t", ["metrics_b", "total"], name="metrics_b"),
            node(explode, "total", "result", name="explode"),
        ]
    )
    parent = mlflow.start_run()
    with pytest.raises(ValueError, match="boom"):
        _run(runner(), pipeline, catalog)
    children = _children(store, parent.info.run_id)
    assert children["metrics_b"].info.status == "FINISHED"
    failed = children["explode"]
    assert failed.info.status == "FAILED"
    assert failed.data.tags["status"] == "FAILED"
    assert failed.data.tags["error"] == "ValueError: boom at the first line"
    assert "duration_s" in failed.data.metrics
    # The parent is kedro-mlflow's to close.
    assert store.get_run(parent.info.run_id).info.status == "RUNNING"


def test_without_a_parent_run_the_hook_warns_once_and_does_nothing(store, table, caplog):
    with caplog.at_level(logging.WARNING, logger="lakehouse_ml.hooks.node_runs"):
        _run(ThreadRunner(max_workers=2), _pipeline(), _catalog_no_metrics(table))
    assert len([r for r in caplog.records if "Per-node MLflow runs are off" in r.getMessage()]) == 1
    assert _all_runs(store) == []


def _catalog_no_metrics(table_path) -> DataCatalog:
    catalog = _catalog(table_path)
    catalog["metrics_a"] = MemoryDataset()
    catalog["metrics_b"] = MemoryDataset()
    return catalog


def test_factory_resolved_delta_input_is_recorded(store, table, tmp_path):
    catalog = DataCatalog.from_config(
        {
            "{name}_table": {
                "type": "lakehouse_ml.datasets.delta.PandasDeltaDataset",
                "filepath": str(tmp_path / "data" / "lakehouse" / "dev" / "silver" / "{name}"),
            },
            "{name}_info": {
                "type": "lakehouse_ml.datasets.delta.DeltaMetadataDataset",
                "filepath": str(tmp_path / "data" / "lakehouse" / "dev" / "silver" / "{name}"),
            },
        }
    )
    pipeline = Pipeline([node(lambda df, info: len(df), ["t_table", "t_info"], "n", name="count_rows")])
    parent = mlflow.start_run()
    _run(SequentialRunner(), pipeline, catalog)
    mlflow.end_run()
    run = _children(store, parent.info.run_id)["count_rows"]
    assert run.data.tags["input.t_table.version"] == "2"
    assert run.data.tags["input.t_info.version"] == "2"
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {"dev.silver.t"}


def run_of(table: pd.DataFrame, run: dict | None, threshold: float):
    """A node that records the run it was given in its own metrics."""
    return {"rows": {"value": float(len(table)), "step": 0}}, {"run": run, "threshold": threshold}


@pytest.mark.parametrize(
    ("runner", "is_async"),
    [
        (SequentialRunner, False),
        (lambda: ThreadRunner(max_workers=2), False),
        (lambda: SequentialRunner(is_async=True), True),
    ],
    ids=["sequential", "thread", "async"],
)
def test_a_node_is_handed_its_own_run_for_its_node_run_input(store, table, runner, is_async):
    """An `MlflowNodeRunDataset` input is replaced by the node's child run, the one its outputs log
    into, whatever the input's position and runner; the node's parameters stay on the kedro run."""
    from lakehouse_ml.datasets.node_run import MlflowNodeRunDataset

    catalog = DataCatalog(
        {
            "t": PandasDeltaDataset(filepath=str(table)),
            "mlflow_node_run": MlflowNodeRunDataset(),
            "params:threshold": MemoryDataset(0.3),
            "metrics_first": MlflowMetricsHistoryDataset(),
            "metrics_last": MlflowMetricsHistoryDataset(),
            "seen_first": MemoryDataset(),
            "seen_last": MemoryDataset(),
        }
    )
    pipeline = Pipeline(
        [
            node(
                func=lambda run, table, threshold: run_of(table, run, threshold),
                inputs=["mlflow_node_run", "t", "params:threshold"],
                outputs=["metrics_first", "seen_first"],
                name="first",
            ),
            node(
                func=run_of,
                inputs=["t", "mlflow_node_run", "params:threshold"],
                outputs=["metrics_last", "seen_last"],
                name="last",
            ),
        ]
    )
    parent = mlflow.start_run()
    _run(runner(), pipeline, catalog)
    mlflow.end_run()
    children = _children(store, parent.info.run_id)
    assert set(children) == {"first", "last"}
    for name in ("first", "last"):
        seen, child = catalog.load(f"seen_{name}"), children[name]
        assert seen["run"] == {"run_id": child.info.run_id, "git_sha": child.data.tags["git_sha"], "env": "test"}
        assert seen["threshold"] == 0.3
        assert child.info.status == "FINISHED" and not child.data.params
        # --async saves outputs from a pool thread, where the node's run is not the active one: a
        # metric dataset logs elsewhere there (known, see docs/pages/architecture.md#mlflow).
        if not is_async:
            assert child.data.metrics["rows"] == 3.0
    assert store.get_run(parent.info.run_id).data.params == {"threshold": "0.3"}


def test_without_tracking_a_node_run_input_is_none(store, table):
    from lakehouse_ml.datasets.node_run import MlflowNodeRunDataset

    catalog = DataCatalog(
        {
            "t": PandasDeltaDataset(filepath=str(table)),
            "mlflow_node_run": MlflowNodeRunDataset(),
            "seen": MemoryDataset(),
        }
    )
    pipeline = Pipeline(
        [node(func=lambda table, run: {"run": run}, inputs=["t", "mlflow_node_run"], outputs="seen", name="n")]
    )
    _run(SequentialRunner(), pipeline, catalog)
    assert catalog.load("seen") == {"run": None}


def test_the_node_run_dataset_is_none_without_tracking_and_read_only(store):
    from kedro.io.core import DatasetError

    from lakehouse_ml.datasets.node_run import MlflowNodeRunDataset

    dataset = MlflowNodeRunDataset()
    assert dataset.load() is None
    with mlflow.start_run() as run:
        assert dataset.load()["run_id"] == run.info.run_id
    with pytest.raises(DatasetError, match="read-only"):
        dataset.save({"run_id": "x"})
