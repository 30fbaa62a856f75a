"""Refuse a session whose MLflow tracking server does not answer or refuses its credentials."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from lakehouse_ml.tracking_server import check_tracking_server, shown_uri, tracking_target

logger = logging.getLogger(__name__)


class TrackingServerHooks:
    """Refuse a session whose http(s) tracking server does not answer or refuses its credentials.

    ``tryfirst``: before kedro-mlflow's own ``after_context_created``, which would otherwise retry
    for minutes, and before the Spark engine starts.
    """

    @hook_impl(tryfirst=True)
    def after_context_created(self, context: Any) -> None:
        """Probe the server the session's mlflow.yml (or environment) names."""
        from kedro.config import MissingConfigException

        loader = context.config_loader
        try:
            mlflow_conf = loader["mlflow"]
        except MissingConfigException:
            mlflow_conf = {}
        try:
            credentials = loader["credentials"]
        except MissingConfigException:
            credentials = {}
        env = loader.env or loader.default_run_env
        envs = [env, loader.base_env] if env and env != loader.base_env else [loader.base_env]
        target = tracking_target(
            mlflow_conf,
            credentials,
            os.environ,
            conf_source=Path(loader.conf_source),
            envs=envs,
            patterns=list(loader.config_patterns.get("mlflow", ["mlflow*"])),
        )
        if target is None:
            return
        check_tracking_server(target)
        logger.info("MLflow tracking server %s answers (user %s)", shown_uri(target.uri), target.username or "none")
