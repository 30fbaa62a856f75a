"""Project settings: hooks, configuration loader and the resolvers the configuration uses."""

import os
import warnings
from pathlib import Path

import optuna
from kedro.config import OmegaConfigLoader

from lakehouse_ml.hooks import GovernanceHooks, RunLockHooks, SparkHooks
from lakehouse_ml.tracking import NodeRunHooks

# The project root: ``src/lakehouse_ml/settings.py`` → two levels up (the project is installed
# editable, as README says), or LAKEHOUSE_ML_ROOT (tests run copies of the project elsewhere).
# MLflow's SQLite URI must be absolute, so the configuration resolves paths against it.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def project_root(subpath: str = "") -> str:
    """Resolve ``${project_root:<subpath>}`` to an absolute POSIX path."""
    root = Path(os.environ.get("LAKEHOUSE_ML_ROOT") or PROJECT_ROOT)
    return (root / subpath).as_posix()


# Kedro 1.7 itself calls OmegaConf's deprecated register_new_resolver on every run; the warning is
# not actionable here and buries the run's own log.
warnings.filterwarnings("ignore", message=r"register_new_resolver\(\) is deprecated", category=UserWarning)

# Optuna logs through its own stderr handler; route it through Kedro's logging instead, where
# conf/logging.yml sets its level.
optuna.logging.disable_default_handler()
optuna.logging.enable_propagation()

# Spark first (datasets need the session); node runs nest under kedro-mlflow's run per `kedro run`.
# Pluggy calls the last registered first: governance refuses a run before Spark starts.
HOOKS = (SparkHooks(), NodeRunHooks(), RunLockHooks(), GovernanceHooks())

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "config_patterns": {
        "spark": ["spark*", "spark*/**"],
        "mlflow": ["mlflow*", "mlflow*/**", "**/mlflow*"],  # kedro-mlflow's pattern, for our own loaders too
        # Feature contracts: one file per feature table, each a parameter named after its table.
        "parameters": ["parameters*", "parameters*/**", "**/parameters*", "feature_tables/*"],
    },
    # Environments override single keys of a parameter (e.g. one source's column mapping) or of
    # mlflow.yml (the experiment name) instead of replacing the whole top-level block.
    "merge_strategy": {"parameters": "soft", "globals": "soft", "mlflow": "soft"},
    "custom_resolvers": {
        "project_root": project_root,
    },
}
