"""Lakehouse ML Lifecycle: the production ML loop on a Delta lakehouse with Kedro and MLflow."""

__version__ = "0.1.0"
