"""One writing run per lakehouse catalog: the run lock held for the run."""

from __future__ import annotations

import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from lakehouse_ml.hooks.run_scope import HeldForTheRun
from lakehouse_ml.run_lock import RunLock

# Set for the processes a run starts (monitoring's `kedro run --pipelines retrain`): a child run of
# the lock's holder runs under its parent's lock instead of being refused by it.
LOCK_VARIABLE = "LAKEHOUSE_ML_RUN_LOCK"


class RunLockHooks(HeldForTheRun):
    """Hold the lakehouse catalog's run lock (``lakehouse_ml.run_lock``) from before the first node
    to the end of the run, so a second run of the same environment is refused at once."""

    def __init__(self) -> None:
        self._lock: RunLock | None = None
        self._env: str | None = None

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        """Find the catalog's folder (local lakehouses only: a file lock means nothing on object storage)."""
        # A run interrupted in a notebook (KeyboardInterrupt skips the after-run hooks) still held it.
        self._release()
        settings = context.config_loader["globals"]
        root = str(settings["lakehouse_root"])
        self._env = context.env or context.config_loader.default_run_env
        if "://" in root:
            self._lock = None
            return
        folder = Path(root) if Path(root).is_absolute() else Path(context.project_path) / root
        self._lock = RunLock(folder / str(settings["catalog"]))

    # tryfirst: refused before other hooks start anything for the run (kedro-mlflow's parent run).
    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        """Take the lock, or refuse the run naming the one that holds it."""
        if self._lock is None or self._nested():
            return
        pipelines = run_params.get("pipeline_names") or [run_params.get("pipeline_name") or "__default__"]
        self._lock.acquire(
            {
                "pipelines": ",".join(pipelines),
                "env": self._env,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "session_id": run_params.get("session_id"),
            }
        )
        os.environ[LOCK_VARIABLE] = str(self._lock.path)

    def _nested(self) -> bool:
        """Whether this run was started by the run that holds the lock (it then holds it for both)."""
        assert self._lock is not None
        return os.environ.get(LOCK_VARIABLE) == str(self._lock.path) and self._lock.holder().get("pid") == os.getppid()

    def _release(self) -> None:
        if self._lock is not None and self._lock.held:
            self._lock.release()
            os.environ.pop(LOCK_VARIABLE, None)
