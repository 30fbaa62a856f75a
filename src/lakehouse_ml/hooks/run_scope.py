"""The base of hooks that hold something for one run (the engine, the run lock)."""

from __future__ import annotations

from kedro.framework.hooks import hook_impl


class HeldForTheRun:
    """Hooks holding something for one run: ``_release`` runs when the run ends, however it ends."""

    def _release(self) -> None:
        raise NotImplementedError

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._release()

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._release()
