"""One nested MLflow run per Kedro node, under kedro-mlflow's run for the pipeline.

``NodeRunHooks`` opens a child run per node (named after the node, tagged with the pipeline,
namespace, node tags, environment, git commit), records the lakehouse Delta tables the node reads
(table name, version and feature-contract hash) and closes the run with ``duration_s`` and its
status. An ``environment.json`` (library versions, Spark engine mode) goes on the parent run.

Threads: the child is created with the client and an explicit parent (``mlflow.parentRunId``),
never through the fluent run stack, which is thread-local; it is then made the active run of the
node's own thread (``before_node_run`` runs there, ThreadRunner's worker and ``--async`` included;
``trylast``: after kedro-mlflow has re-entered its run in that thread and logged the node's
parameters to it), so whatever the node logs through the fluent API, including kedro-mlflow
metric datasets saved as its outputs, lands in the node's run. Kedro saves outputs *after*
``after_node_run``, so the child stays active until the node's last output is saved
(``after_dataset_saved``) and only then ends.

A node that writes its run's id into what it produces declares an input of type
``lakehouse_ml.datasets.MlflowNodeRunDataset`` (``mlflow_node_run``): ``before_node_run`` returns
its run (``{run_id, git_sha, env}``) for that input, which Kedro passes to the node in place of the
loaded value. The node reads no global state; its tests pass a hand-made run or ``None``.

The hook never breaks a run: without an active parent run (kedro-mlflow disabled for the pipeline,
MLflow unavailable) it warns once and does nothing; tracking errors are logged, not raised.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from kedro.framework.hooks import hook_impl

from lakehouse_ml.tracking import PARENT_TAG, PROJECT, delta_input, environment_info, git_sha

logger = logging.getLogger(__name__)

_TAG_KEY_INVALID = re.compile(r"[^\w\-. /:]")


def _tag_key(text: str) -> str:
    """MLflow tag keys allow alphanumerics, ``_ - . / :`` and spaces (``a@b`` is not one)."""
    return _TAG_KEY_INVALID.sub("_", text)


def _pipeline_name(run_params: dict[str, Any]) -> str:
    names = run_params.get("pipeline_names") or run_params.get("pipeline_name") or "__default__"
    return names if isinstance(names, str) else "+".join(names)


def _run_env(run_params: dict[str, Any]) -> str:
    """The Kedro environment of the run: ``--env`` or the project's default run environment."""
    if run_params.get("env"):
        return str(run_params["env"])
    from lakehouse_ml.configuration import CONFIG_LOADER_ARGS

    return str(CONFIG_LOADER_ARGS.get("default_run_env") or "")


def _error_summary(error: BaseException) -> str:
    """Exception class and the first line of its message (data values can follow on later lines)."""
    lines = str(error).strip().splitlines()
    first = lines[0][:250] if lines else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


@dataclass
class _Child:
    run_id: str
    started: float
    thread: int
    pending: set[str] = field(default_factory=set)
    active: bool = False  # pushed on the fluent run stack of its thread
    computed: bool = False


class NodeRunHooks:
    """One MLflow child run per Kedro node under kedro-mlflow's parent run (see module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._catalog: Any = None
        self._reset()

    def _reset(self) -> None:
        self._client: Any = None
        self._parent_id: str | None = None
        self._experiment_id: str | None = None
        self._run_params: dict[str, Any] = {}
        self._git_sha: str | None = None
        self._environment_logged = False
        self._disabled = False
        self._warned = False
        self._children: dict[str, _Child] = {}

    # -- Kedro hooks ------------------------------------------------------------------------

    @hook_impl
    def after_catalog_created(self, catalog: Any) -> None:
        """Keep the catalog to resolve node inputs to datasets (factory patterns included)."""
        self._catalog = catalog

    @hook_impl(trylast=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        """Find kedro-mlflow's parent run (started by its own, earlier, before_pipeline_run)."""
        with self._lock:
            self._reset()
            self._run_params = dict(run_params or {})
            self._catalog = catalog
            self._resolve_parent()

    @hook_impl(trylast=True)
    def before_node_run(self, node: Any, catalog: Any, inputs: dict[str, Any]) -> dict[str, Any] | None:
        """Open the node's child run, make it this thread's active run, record its Delta inputs;
        return the run for the node's ``MlflowNodeRunDataset`` inputs, if it has any."""
        try:
            with self._lock:
                if not self._resolve_parent():
                    return None
                child = self._start_child(node)
            self._activate(child)
            catalog = catalog or self._catalog
            self._log_delta_inputs(node, catalog, child.run_id)
            run = {"run_id": child.run_id, "git_sha": self._git_sha, "env": _run_env(self._run_params)}
            return {name: run for name in _node_run_inputs(node, catalog)} or None
        except Exception as exc:  # noqa: BLE001 - tracking must never break the run
            logger.warning("MLflow node tracking failed before node '%s': %s", node.name, exc)
            return None

    @hook_impl
    def after_node_run(self, node: Any) -> None:
        """Log ``duration_s``; end the run now unless outputs are still to be saved."""
        child = self._children.get(node.name)
        if child is None:
            return
        try:
            self._client.log_metric(child.run_id, "duration_s", time.perf_counter() - child.started)
            child.computed = True
            # Generator nodes save their outputs chunk by chunk: there is no "last save" to wait for.
            if not child.pending or inspect.isgeneratorfunction(node.func):
                self._finish(node.name, "FINISHED")
        except Exception as exc:  # noqa: BLE001
            logger.warning("MLflow node tracking failed after node '%s': %s", node.name, exc)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, node: Any) -> None:
        """End the node's run once its last output is saved (metric datasets log into it)."""
        child = self._children.get(node.name)
        if child is None:
            return
        child.pending.discard(dataset_name)
        if child.computed and not child.pending:
            self._finish(node.name, "FINISHED")

    @hook_impl
    def on_node_error(self, error: Exception, node: Any) -> None:
        """End the node's run as FAILED with the error's class and first message line."""
        if node.name in self._children:
            self._finish(node.name, "FAILED", error=error)

    @hook_impl(tryfirst=True)
    def after_pipeline_run(self) -> None:
        """Close children still open (before kedro-mlflow ends the parent)."""
        self._close_all("FINISHED")

    @hook_impl(tryfirst=True)
    def on_pipeline_error(self, error: Exception) -> None:
        """Close children still open, e.g. a node whose output failed to save, as FAILED."""
        self._close_all("FAILED", error=error)

    # -- internals --------------------------------------------------------------------------

    def _resolve_parent(self) -> bool:
        """The parent run: kedro-mlflow's active run (this thread). Warn once when there is none."""
        if self._parent_id is not None:
            return True
        if self._disabled:
            return False
        try:
            import mlflow

            run = mlflow.active_run()
            if run is None:
                self._disable("no active MLflow run (kedro-mlflow tracking disabled for this pipeline?)")
                return False
            self._client = mlflow.MlflowClient()
            self._parent_id = run.info.run_id
            self._experiment_id = run.info.experiment_id
            project_path = self._run_params.get("project_path") or os.environ.get("LAKEHOUSE_ML_ROOT")
            self._git_sha = git_sha(project_path)
        except Exception as exc:  # noqa: BLE001
            self._disable(f"MLflow unavailable: {exc}")
            return False
        self._log_environment()
        return True

    def _disable(self, reason: str) -> None:
        self._disabled = True
        if not self._warned:
            self._warned = True
            logger.warning("Per-node MLflow runs are off for this run: %s", reason)

    def _log_environment(self) -> None:
        if self._environment_logged:
            return
        self._environment_logged = True
        try:
            self._client.log_text(
                self._parent_id, json.dumps(environment_info(), indent=2, sort_keys=True), "environment.json"
            )
        except Exception as exc:  # noqa: BLE001
            logger.warning("Could not log environment.json to MLflow run %s: %s", self._parent_id, exc)

    def _start_child(self, node: Any) -> _Child:
        tags = {
            PARENT_TAG: self._parent_id,
            "pipeline": _pipeline_name(self._run_params),
            "namespace": node.namespace or "",
            "node": node.name,
            "node_tags": ",".join(sorted(node.tags)),
            "env": _run_env(self._run_params),
            "git_sha": self._git_sha or "unknown",
            "project": PROJECT,
            "run_type": "pipeline",
        }
        run = self._client.create_run(self._experiment_id, tags=tags, run_name=node.name)
        child = _Child(
            run_id=run.info.run_id,
            started=time.perf_counter(),
            thread=threading.get_ident(),
            pending=set(node.outputs),
        )
        self._children[node.name] = child
        return child

    def _activate(self, child: _Child) -> None:
        """Make the child the active run of this (the node's) thread, for the node's own logging."""
        import mlflow

        try:
            mlflow.start_run(run_id=child.run_id, nested=True)
            child.active = True
        except Exception as exc:  # noqa: BLE001
            logger.warning("Could not activate MLflow run %s for its node: %s", child.run_id, exc)

    def _finish(self, node_name: str, status: str, error: BaseException | None = None) -> None:
        with self._lock:
            child = self._children.pop(node_name, None)
        if child is None:
            return
        try:
            import mlflow

            if status == "FAILED" and not child.computed:
                self._client.log_metric(child.run_id, "duration_s", time.perf_counter() - child.started)
            self._client.set_tag(child.run_id, "status", status)
            if error is not None:
                self._client.set_tag(child.run_id, "error", _error_summary(error))
            active = mlflow.active_run()
            if child.active and child.thread == threading.get_ident() and active and active.info.run_id == child.run_id:
                mlflow.end_run(status)
            else:
                # Another thread's stack (or already popped by kedro-mlflow): end it by id.
                self._client.set_terminated(child.run_id, status)
        except Exception as exc:  # noqa: BLE001
            logger.warning("Could not close MLflow run for node '%s': %s", node_name, exc)

    def _close_all(self, status: str, error: BaseException | None = None) -> None:
        for name in list(self._children):
            self._finish(name, status, error=error)
        with self._lock:
            self._parent_id = None
            self._disabled = False
            self._warned = False

    def _log_delta_inputs(self, node: Any, catalog: Any, run_id: str) -> None:
        import mlflow
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        inputs, tags = [], {}
        for name in node.inputs:
            if name == "parameters" or name.startswith("params:") or catalog is None:
                continue
            try:
                info = delta_input(catalog, name)
            except Exception as exc:  # noqa: BLE001
                logger.warning("Could not read Delta provenance of '%s': %s", name, exc)
                continue
            if info is None:
                continue
            dataset = mlflow.data.meta_dataset.MetaDataset(
                source=_delta_source(info["path"], info["version"]),
                name=info["table"],
                digest=str(info["version"]),
            )
            input_tags = [InputTag(MLFLOW_DATASET_CONTEXT, node.name), InputTag("version", str(info["version"]))]
            key = _tag_key(f"input.{name}")
            tags[f"{key}.version"] = str(info["version"])
            tags[f"{key}.table"] = info["table"]
            if info["contract_hash"]:
                input_tags.append(InputTag("contract_hash", info["contract_hash"]))
                tags[f"{key}.contract_hash"] = info["contract_hash"]
            # The entity from the dataset's public dict (what MLflow's own private conversion does).
            inputs.append(DatasetInput(Dataset(**dataset.to_dict()), tags=input_tags))
        for key, value in tags.items():
            self._client.set_tag(run_id, key, value)
        if inputs:
            # Equivalent to mlflow.log_input(dataset, context=node.name), with an explicit run id.
            # Serialised: two threads registering the same dataset at once hit a UNIQUE
            # constraint in MLflow's SQL store (seen with ThreadRunner).
            with self._lock:
                self._client.log_inputs(run_id, datasets=inputs)


def _node_run_inputs(node: Any, catalog: Any) -> list[str]:
    """The node's inputs that are an ``MlflowNodeRunDataset`` (by type, whatever the catalog calls them)."""
    from lakehouse_ml.datasets.node_run import MlflowNodeRunDataset

    if catalog is None:
        return []
    return [name for name in node.inputs if isinstance(catalog.get(name), MlflowNodeRunDataset)]


def _delta_source(path: str, version: int) -> Any:
    try:
        from mlflow.data.delta_dataset_source import DeltaDatasetSource

        return DeltaDatasetSource(path=path, delta_table_version=version)
    except Exception:  # noqa: BLE001
        from mlflow.data.http_dataset_source import HTTPDatasetSource

        return HTTPDatasetSource(url=f"file://{path}")
