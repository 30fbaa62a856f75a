"""The project's Kedro hooks, registered in ``settings.py`` (one module each): logging set-up
(``logs``), the Spark engine's lifecycle (``engine``), the tracking server check
(``tracking_server``), one MLflow run per node (``node_runs``), one writing run per lakehouse
catalog (``run_lock``) and release governance (``governance``)."""

from lakehouse_ml.hooks.engine import SparkHooks
from lakehouse_ml.hooks.governance import GovernanceHooks
from lakehouse_ml.hooks.logs import LoggingHooks
from lakehouse_ml.hooks.node_runs import NodeRunHooks
from lakehouse_ml.hooks.run_lock import LOCK_VARIABLE, RunLockHooks
from lakehouse_ml.hooks.tracking_server import TrackingServerHooks

__all__ = [
    "LOCK_VARIABLE",
    "GovernanceHooks",
    "LoggingHooks",
    "NodeRunHooks",
    "RunLockHooks",
    "SparkHooks",
    "TrackingServerHooks",
]
