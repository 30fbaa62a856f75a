"""Logging set-up for a Kedro session."""

from __future__ import annotations

from kedro.framework.hooks import hook_impl


class LoggingHooks:
    """Route Optuna's log records through Kedro's logging, where ``conf/logging.yml`` sets their level."""

    @hook_impl(tryfirst=True)
    def after_context_created(self) -> None:
        """Optuna logs through its own stderr handler by default: hand its records to the root logger instead."""
        import optuna

        optuna.logging.disable_default_handler()
        optuna.logging.enable_propagation()
