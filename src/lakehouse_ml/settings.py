"""Project settings: hooks, configuration loader and the resolvers the configuration uses."""

import warnings

import optuna
from kedro.config import OmegaConfigLoader

# The loader's arguments live apart from the hooks: the scoring service loads the configuration
# without Kedro's settings (and so without the engine).
from lakehouse_ml.configuration import CONFIG_LOADER_ARGS  # noqa: F401 (read by Kedro)
from lakehouse_ml.hooks import GovernanceHooks, RunLockHooks, SparkHooks
from lakehouse_ml.tracking import NodeRunHooks
from lakehouse_ml.tracking_server import TrackingServerHooks

# Kedro 1.7 itself calls OmegaConf's deprecated register_new_resolver on every run; the warning is
# not actionable here and buries the run's own log.
warnings.filterwarnings("ignore", message=r"register_new_resolver\(\) is deprecated", category=UserWarning)

# Optuna logs through its own stderr handler; route it through Kedro's logging instead, where
# conf/logging.yml sets its level.
optuna.logging.disable_default_handler()
optuna.logging.enable_propagation()

# Spark first (datasets need the session); node runs nest under kedro-mlflow's run per `kedro run`.
# Pluggy calls the last registered first: governance refuses a run before Spark starts. The
# tracking server check is tryfirst: before kedro-mlflow (a plugin) contacts the server.
HOOKS = (SparkHooks(), NodeRunHooks(), RunLockHooks(), GovernanceHooks(), TrackingServerHooks())

CONFIG_LOADER_CLASS = OmegaConfigLoader
