"""Release governance: policy from the environment's files only, the actor from the process."""

from __future__ import annotations

import os
from typing import Any

from kedro.framework.hooks import hook_impl

from lakehouse_ml.governance import ConfigLayout, check_runtime_params, release_governance


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
