"""Release datasets: the MLflow model registry as data in / actions out, the candidate's run record,
the context of a release (who, when, which run) and the append-only promotion audit table."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from deltalake import write_deltalake
from kedro.io.core import AbstractDataset, DatasetError

from lakehouse_ml.datasets.delta import PandasDeltaDataset
from lakehouse_ml.release import REGISTERED, empty_registry_state

logger = logging.getLogger(__name__)


def _version_entry(version: Any, aliases: dict[str, str]) -> dict[str, Any]:
    number = str(version.version)
    return {
        "version": number,
        "run_id": version.run_id,
        "source": version.source,
        "status": version.status,
        "description": version.description or "",
        "tags": dict(version.tags or {}),
        # From the model's alias map: version search results do not carry aliases.
        "aliases": sorted(alias for alias, target in aliases.items() if target == number),
    }


class ModelRegistryDataset(AbstractDataset[list[dict[str, Any]], dict[str, Any]]):
    """One registered model of the MLflow registry: ``load`` its state, ``save`` a list of actions.

    ``load`` returns ``{name, exists, aliases: {alias: version}, versions: {version: {version,
    run_id, source, status, description, tags, aliases}}}`` (``exists`` false and both maps empty
    before the first registration). Versions are strings, as MLflow reports them.

    ``save`` applies actions in order:
    ``{"action": "register", "model_uri", "description", "tags"}`` creates the registered model if
    missing and a new version; a later action's ``"version": "$registered"`` means that version.
    ``{"action": "set_alias", "alias", "version"}``, ``{"action": "delete_alias", "alias"}`` and
    ``{"action": "set_version_tag", "version", "key", "value"}`` do what they say. Nothing here
    decides anything: the release pipelines plan the actions from the loaded state.
    """

    def __init__(self, *, model_name: str, metadata: dict[str, Any] | None = None) -> None:
        self._model_name = model_name
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"model_name": self._model_name}

    def load(self) -> dict[str, Any]:
        """The model's versions (tags, run, source, status, description) and aliases."""
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        client = MlflowClient()
        try:
            model = client.get_registered_model(self._model_name)
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            return empty_registry_state(self._model_name)
        versions, token = [], None
        while True:
            page = client.search_model_versions(f"name = '{self._model_name}'", page_token=token)
            versions.extend(page)
            token = page.token
            if not token:
                break
        aliases = {alias: str(version) for alias, version in sorted((model.aliases or {}).items())}
        entries = sorted((_version_entry(v, aliases) for v in versions), key=lambda e: int(e["version"]))
        return {
            "name": self._model_name,
            "exists": True,
            "aliases": aliases,
            "versions": {e["version"]: e for e in entries},
        }

    def save(self, data: list[dict[str, Any]]) -> None:
        """Apply the actions in order (see the class docstring)."""
        from mlflow import MlflowClient

        client = MlflowClient()
        registered = None
        for action in data:
            kind = action.get("action")
            version = action.get("version")
            if version == REGISTERED:
                if registered is None:
                    raise DatasetError(
                        f"action {action} refers to the registered version, but no 'register' action came first"
                    )
                version = registered
            if kind == "register":
                registered = self._register(client, action)
            elif kind == "set_alias":
                client.set_registered_model_alias(self._model_name, action["alias"], version)
                logger.info("registry: %s@%s -> version %s", self._model_name, action["alias"], version)
            elif kind == "delete_alias":
                client.delete_registered_model_alias(self._model_name, action["alias"])
                logger.info("registry: %s@%s removed", self._model_name, action["alias"])
            elif kind == "set_version_tag":
                client.set_model_version_tag(self._model_name, version, action["key"], str(action["value"]))
            else:
                raise DatasetError(f"unknown registry action {kind!r} in {action}")

    def _register(self, client: Any, action: dict[str, Any]) -> str:
        import mlflow

        version = mlflow.register_model(action["model_uri"], self._model_name, tags=action.get("tags") or {}).version
        if action.get("description"):
            client.update_model_version(self._model_name, version, description=action["description"])
        logger.info("registry: registered %s version %s from %s", self._model_name, version, action["model_uri"])
        return str(version)


class CandidateRunDataset(AbstractDataset[None, dict[str, Any]]):
    """The MLflow run of the candidate named by ``candidate.json``: its tags and provenance report.

    ``load`` returns ``{run_id, tags, provenance}``, the provenance read from the run's own
    ``provenance`` artifact (training-set spec with source versions and contract hashes); read-only.
    """

    def __init__(
        self, *, filepath: str, provenance: str = "reports/provenance.json", metadata: dict[str, Any] | None = None
    ) -> None:
        self._filepath = filepath
        self._provenance = provenance
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "provenance": self._provenance}

    def load(self) -> dict[str, Any]:
        """Read the pointer, then the run's tags and provenance artifact."""
        import mlflow
        from mlflow import MlflowClient

        path = Path(self._filepath)
        if not path.is_file():
            raise DatasetError(f"no candidate at {self._filepath}: run the tuning and training pipelines first")
        run_id = json.loads(path.read_text())["run_id"]
        try:
            provenance = mlflow.artifacts.load_dict(f"runs:/{run_id}/{self._provenance}")
        except Exception as error:
            raise DatasetError(f"candidate run {run_id} has no '{self._provenance}' artifact: {error}") from error
        return {"run_id": run_id, "tags": dict(MlflowClient().get_run(run_id).data.tags), "provenance": provenance}

    def save(self, data: None) -> None:
        raise DatasetError("CandidateRunDataset is read-only: the training pipeline logs the candidate run")


class ReleaseContextDataset(AbstractDataset[None, dict[str, Any]]):
    """When and in which run a release happens: ``{at, catalog, kedro_run_id}`` (read-only).

    ``at`` is the UTC time of loading, ``kedro_run_id`` the MLflow run kedro-mlflow opened for this
    ``kedro run`` (``None`` without one). Who releases is not here: it is the identity the process
    can vouch for (``lakehouse_ml.governance.release_identity``).
    """

    def __init__(self, *, catalog: str, metadata: dict[str, Any] | None = None) -> None:
        self._catalog = catalog
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"catalog": self._catalog}

    def load(self) -> dict[str, Any]:
        """The time, the catalog and the active MLflow run."""
        import mlflow

        run = mlflow.active_run()
        return {
            "at": datetime.now(timezone.utc),
            "catalog": self._catalog,
            "kedro_run_id": run.info.run_id if run else None,
        }

    def save(self, data: None) -> None:
        raise DatasetError("ReleaseContextDataset is read-only")


class AuditTableDataset(PandasDeltaDataset):
    """An append-only Delta audit table (delta-rs): ``save`` appends the rows, and no rows write nothing.

    Appends may add columns: a table written before a column existed gains it (its earlier rows
    read null there) instead of refusing the wider rows.
    """

    def save(self, data: pd.DataFrame) -> None:
        """Append ``data``, merging new columns into the table's schema; an empty frame adds no version."""
        if data.empty:
            logger.info("Delta table '%s': no rows to append", self._filepath)
            return
        write_deltalake(self._uri, data, mode="append", schema_mode="merge")
