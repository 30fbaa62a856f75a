"""Project settings: hooks, configuration loader and the resolvers the configuration uses.

Importing this module changes nothing: warning filters and Optuna's logging are set up by the
configuration loader and a hook, when a Kedro session makes them.
"""

# The loader's arguments live apart from the hooks: the scoring service loads the configuration
# without Kedro's settings (and so without the engine).
from lakehouse_ml.configuration import CONFIG_LOADER_ARGS, ProjectConfigLoader
from lakehouse_ml.hooks import (
    GovernanceHooks,
    LoggingHooks,
    NodeRunHooks,
    RunLockHooks,
    SparkHooks,
    TrackingServerHooks,
)

# Spark first (datasets need the session); node runs nest under kedro-mlflow's run per `kedro run`.
# Pluggy calls the last registered first: governance refuses a run before Spark starts. The
# tracking server check is tryfirst: before kedro-mlflow (a plugin) contacts the server.
HOOKS = (LoggingHooks(), SparkHooks(), NodeRunHooks(), RunLockHooks(), GovernanceHooks(), TrackingServerHooks())

CONFIG_LOADER_CLASS = ProjectConfigLoader
__all__ = ["CONFIG_LOADER_ARGS", "CONFIG_LOADER_CLASS", "HOOKS"]
