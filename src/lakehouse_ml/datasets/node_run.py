"""The MLflow run a node logs into, as a declared input: a node that needs its run id says so."""

from __future__ import annotations

from typing import Any

from kedro.io.core import AbstractDataset, DatasetError


class MlflowNodeRunDataset(AbstractDataset[Any, dict[str, Any] | None]):
    """The node's own MLflow run: ``{run_id, git_sha, env}``, or ``None`` when tracking is off.

    In a ``kedro run``, ``lakehouse_ml.hooks.NodeRunHooks`` opens each node's child run in
    ``before_node_run`` and returns it for this input, which Kedro hands the node instead of what
    ``load`` gave. ``load`` itself (a notebook, a session without the hook) gives the active run of
    the calling thread, if any: the run a node's fluent logging would reach there.
    """

    def __init__(self, *, metadata: dict[str, Any] | None = None) -> None:
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {}

    def _exists(self) -> bool:
        return True  # nothing stored: there is always a run, or None, to give

    def load(self) -> dict[str, Any] | None:
        """The active run's id and the commit and environment it was tagged with."""
        import mlflow

        run = mlflow.active_run()
        if run is None:
            return None
        tags = run.data.tags
        return {"run_id": run.info.run_id, "git_sha": tags.get("git_sha"), "env": tags.get("env")}

    def save(self, data: Any) -> None:
        raise DatasetError("MlflowNodeRunDataset is read-only: the node-run hooks open the run")
