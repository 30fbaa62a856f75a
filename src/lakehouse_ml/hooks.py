"""Project hooks: logging set-up, the Spark engine's lifecycle around Kedro sessions and runs, one
writing run per lakehouse catalog, and release governance."""

from __future__ import annotations

import atexit
import logging
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from lakehouse_ml.engine import ENGINE, EngineConfig
from lakehouse_ml.governance import ConfigLayout, check_runtime_params, release_governance
from lakehouse_ml.run_lock import RunLock

logger = logging.getLogger(__name__)


def _interactive() -> bool:
    """Whether we run inside IPython/Jupyter, where the session must outlive a single run."""
    shell = sys.modules.get("IPython")
    return bool(shell and shell.get_ipython())


class LoggingHooks:
    """Route Optuna's log records through Kedro's logging, where ``conf/logging.yml`` sets their level."""

    @hook_impl(tryfirst=True)
    def after_context_created(self) -> None:
        """Optuna logs through its own stderr handler by default: hand its records to the root logger instead."""
        import optuna

        optuna.logging.disable_default_handler()
        optuna.logging.enable_propagation()


class _HeldForTheRun:
    """Hooks holding something for one run: ``_release`` runs when the run ends, however it ends."""

    def _release(self) -> None:
        raise NotImplementedError

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._release()

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._release()


class SparkHooks(_HeldForTheRun):
    """Start the Spark engine from ``conf/<env>/spark.yml`` and stop it after the run.

    The engine starts when the Kedro context is created, before any dataset loads, so
    kedro-datasets' Spark datasets and our Delta datasets pick the session up by themselves.
    It stops after the run and on failure; in IPython/Jupyter it lives until the kernel exits,
    so ``catalog.load`` keeps working between ``session.run`` calls. An engine that was already
    running (a test's fixture, a notebook) is left alone.
    """

    def __init__(self) -> None:
        self._owns_engine = False

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        """Start the engine configured for this environment."""
        if ENGINE.running:
            return
        config = EngineConfig.from_dict(context.config_loader["spark"])
        ENGINE.start(config)
        self._owns_engine = True
        atexit.register(ENGINE.stop)

    def _release(self) -> None:
        """Stop the engine this hook started once the run is over (or failed)."""
        if self._owns_engine and not _interactive():
            ENGINE.stop()
            self._owns_engine = False


class GovernanceHooks:
    """Release policy from the environment's files only; the actor from the process, never a parameter.

    When the context is created (before the engine starts and before any node runs), a run whose
    ``--params`` touch a key of ``governance.protected_params``, the ``governance`` block itself or
    an identity key (``promotion.actor``, ``rollback.actor``) is refused, naming the file to change;
    the run parameters are checked again before the pipeline runs, for sessions that take them
    only then. The catalog then gets ``release_governance``: the actor and how it is known, the
    host and the policy (``lakehouse_ml.governance.release_governance``), which the release
    pipelines record.
    """

    def __init__(self) -> None:
        self._layout: ConfigLayout | None = None
        self._parameters: dict[str, Any] | None = None

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        """Refuse run-time overrides of release policy; keep the policy for the catalog."""
        loader = context.config_loader
        layout = ConfigLayout.of(loader, context.project_path)
        # The loader's parameters (runtime ones merged in), not `context.params`: that would
        # validate the parameters of every registered pipeline here.
        parameters = loader["parameters"]
        check_runtime_params(loader.runtime_params, parameters, layout)
        self._layout, self._parameters = layout, parameters

    @hook_impl
    def after_catalog_created(self, catalog: Any) -> None:
        """Add ``release_governance`` (after kedro-mlflow set the tracking URI the identity may come from)."""
        if self._layout is None or self._parameters is None:
            return
        import mlflow

        catalog["release_governance"] = release_governance(
            self._parameters, self._layout, mlflow.get_tracking_uri(), os.environ
        )

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        """Refuse runtime parameters given to the run rather than to the session."""
        if self._layout is not None and self._parameters is not None:
            check_runtime_params(run_params.get("runtime_params") or {}, self._parameters, self._layout)


# Set for the processes a run starts (monitoring's `kedro run --pipelines retrain`): a child run of
# the lock's holder runs under its parent's lock instead of being refused by it.
LOCK_VARIABLE = "LAKEHOUSE_ML_RUN_LOCK"


class RunLockHooks(_HeldForTheRun):
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
