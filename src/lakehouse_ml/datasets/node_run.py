"""The MLflow run a node logs into, as a read-only dataset: a node that needs its run id declares it."""

from __future__ import annotations

from typing import Any

from kedro.io.core import AbstractDataset, DatasetError


class MlflowNodeRunDataset(AbstractDataset[Any, dict[str, Any] | None]):
    """The node's own MLflow run: ``{run_id, git_sha, env}``, or ``None`` when tracking is off.

    ``lakehouse_ml.hooks.NodeRunHooks`` opens each node's child run before the node's first
    input loads and makes it the active run of the node's thread, so as a node input this is the
    run that node's outputs are logged into. Loaded anywhere else it is the active run, if any.
    """

    def __init__(self, *, metadata: dict[str, Any] | None = None) -> None:
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {}

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
