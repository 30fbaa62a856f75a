"""A Kedro run as a dataset: saving a request runs ``kedro run --pipelines <pipeline> --env <env>``."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kedro.io.core import AbstractDataset, DatasetError

logger = logging.getLogger(__name__)


class KedroRunDataset(AbstractDataset[dict[str, Any] | None, None]):
    """Saving ``{reason, ...}`` runs the pipeline in a new process of the same project and environment
    (its own session, MLflow run and engine) and waits for it; saving ``None`` runs nothing.

    A failed run raises with the end of its output, so the run that asked for it fails too.
    Write-only: what the run produced is in its own tables and MLflow run.
    """

    def __init__(
        self, *, pipeline: str, env: str, project_path: str | None = None, metadata: dict[str, Any] | None = None
    ) -> None:
        self._pipeline = pipeline
        self._env = env
        self._project_path = project_path
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"pipeline": self._pipeline, "env": self._env}

    def command(self) -> list[str]:
        """The command a request runs."""
        return [sys.executable, "-m", "kedro", "run", "--pipelines", self._pipeline, "--env", self._env]

    def load(self) -> None:
        raise DatasetError("KedroRunDataset is write-only: a request starts a run")

    def save(self, data: dict[str, Any] | None) -> None:
        """Run the pipeline for ``data`` (its ``reason`` is logged), or nothing for ``None``."""
        if not data:
            return
        cwd = Path(self._project_path or Path.cwd())
        logger.warning(
            "starting `kedro run --pipelines %s --env %s` in %s: %s", self._pipeline, self._env, cwd, data.get("reason")
        )
        started = time.perf_counter()
        result = subprocess.run(self.command(), cwd=cwd, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
            raise DatasetError(
                f"`kedro run --pipelines {self._pipeline} --env {self._env}` failed (exit {result.returncode}) after "
                f"{seconds:.0f} s; its last lines:\n{tail}"
            )
        logger.warning("`kedro run --pipelines %s --env %s` finished in %.0f s", self._pipeline, self._env, seconds)
