"""The Spark engine's lifecycle around Kedro sessions and runs."""

from __future__ import annotations

import atexit
import sys
from typing import Any

from kedro.framework.hooks import hook_impl

from lakehouse_ml.engine import ENGINE, EngineConfig
from lakehouse_ml.hooks.run_scope import HeldForTheRun


def _interactive() -> bool:
    """Whether we run inside IPython/Jupyter, where the session must outlive a single run."""
    shell = sys.modules.get("IPython")
    return bool(shell and shell.get_ipython())


class SparkHooks(HeldForTheRun):
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
