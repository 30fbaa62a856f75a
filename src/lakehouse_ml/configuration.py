"""How the project's configuration is loaded: Kedro's settings use it, and so do the scoring service
and tests, which load the configuration without starting a Kedro session (no hooks, no engine)."""

import os
import warnings
from pathlib import Path
from typing import Any

from kedro.config import OmegaConfigLoader

# The project root: ``src/lakehouse_ml/configuration.py`` → two levels up (the project is installed
# editable, as README says), or LAKEHOUSE_ML_ROOT (tests run copies of the project elsewhere).
# MLflow's SQLite URI must be absolute, so the configuration resolves paths against it.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def project_root(subpath: str = "") -> str:
    """Resolve ``${project_root:<subpath>}`` to an absolute POSIX path."""
    root = Path(os.environ.get("LAKEHOUSE_ML_ROOT") or PROJECT_ROOT)
    return (root / subpath).as_posix()


CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "config_patterns": {
        "spark": ["spark*", "spark*/**"],
        "mlflow": ["mlflow*", "mlflow*/**", "**/mlflow*"],  # kedro-mlflow's pattern, for our own loaders too
        # Feature contracts: one file per feature table, each nested under `feature_tables:`.
        "parameters": ["parameters*", "parameters*/**", "**/parameters*", "feature_tables/*"],
    },
    # Environments override single keys of a parameter (e.g. one source's column mapping), of
    # mlflow.yml (the experiment name) or of spark.yml (the memory pool's size) instead of replacing
    # the whole top-level block, which would silently drop the base's other engine settings.
    "merge_strategy": {"parameters": "soft", "globals": "soft", "mlflow": "soft", "spark": "soft"},
    "custom_resolvers": {
        "project_root": project_root,
    },
}


class ProjectConfigLoader(OmegaConfigLoader):
    """Kedro's ``OmegaConfigLoader``, without OmegaConf's deprecation warning about Kedro's own calls."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Kedro 1.7 itself calls OmegaConf's deprecated register_new_resolver on every run (when
        # the loader is made, then on each read); the warning is not actionable here and buries the
        # run's own log. Filtered when the project's loader is made, not when its settings are imported.
        warnings.filterwarnings("ignore", message=r"register_new_resolver\(\) is deprecated", category=UserWarning)
        super().__init__(*args, **kwargs)
