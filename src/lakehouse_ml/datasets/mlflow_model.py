"""MLflow model datasets: the candidate read back from its pointer, and a registered version resolved
from an alias (the scoring service loads its releases with it, so nothing here needs kedro-mlflow;
the candidate is logged by ``signed_model.MlflowSignedModelDataset``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from kedro.io.core import AbstractDataset, DatasetError

logger = logging.getLogger(__name__)


THRESHOLD_TAG = "operating_threshold"


def _model_entry(model_uri: str, flavor: str = "pyfunc", **info: Any) -> dict[str, Any]:
    """The model at ``model_uri`` loaded with ``flavor``, with its signature's input schema and columns.

    ``pyfunc`` is how the scoring service loads it; ``sklearn`` gives the fitted pipeline itself
    (what a Spark scoring function carries to its workers).
    """
    import mlflow

    signature = mlflow.models.get_model_info(model_uri).signature
    if signature is None or signature.inputs is None:
        raise DatasetError(f"{model_uri} was logged without a signature: its input columns are unknown")
    loader = {"pyfunc": mlflow.pyfunc.load_model, "sklearn": mlflow.sklearn.load_model}[flavor]
    return {
        "model_uri": model_uri,
        "model": loader(model_uri),
        "input_schema": signature.inputs,
        "input_columns": list(signature.inputs.input_names()),
        **info,
    }


class CandidateModelDataset(AbstractDataset[dict[str, Any], None]):
    """The candidate model named by the training pipeline's pointer file (``candidate.json``).

    ``load`` returns ``{pointer, model_uri, model (pyfunc), input_schema}``; read-only.
    """

    def __init__(self, *, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = filepath
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath}

    def load(self) -> dict[str, Any]:
        """Read the pointer and load the model it names."""
        path = Path(self._filepath)
        if not path.is_file():
            raise DatasetError(f"no candidate at {self._filepath}: run the tuning and training pipelines first")
        pointer = json.loads(path.read_text())
        return _model_entry(pointer["model_uri"], pointer=pointer, run_id=pointer["run_id"])

    def save(self, data: None) -> None:
        raise DatasetError("CandidateModelDataset is read-only: the training pipeline writes the pointer")


class RegisteredModelAliasDataset(AbstractDataset[dict[str, Any] | None, None]):
    """The registered model version an alias points to, resolved once to a concrete version.

    ``load`` returns ``{name, alias, version, run_id, tags, operating_threshold, model_uri, model,
    input_schema, input_columns}`` with ``model_uri = models:/<name>/<version>`` (so a concurrent
    alias move cannot change what this run uses) and ``model`` loaded with ``flavor`` (``pyfunc``
    as serving loads it, or ``sklearn``). ``operating_threshold`` is the version's tag as a float
    (None when absent; an error with ``require_threshold``). A missing model or alias is ``None``
    when ``required`` is false, else an error naming the model and alias. Never "the newest
    version": releases are found by alias only.
    """

    def __init__(
        self,
        *,
        model_name: str,
        alias: str,
        required: bool = True,
        flavor: str = "pyfunc",
        require_threshold: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if flavor not in ("pyfunc", "sklearn"):
            raise DatasetError(f"RegisteredModelAliasDataset: flavor must be pyfunc or sklearn, got {flavor!r}")
        self._model_name = model_name
        self._alias = alias
        self._required = required
        self._flavor = flavor
        self._require_threshold = require_threshold
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {
            "model_name": self._model_name,
            "alias": self._alias,
            "required": self._required,
            "flavor": self._flavor,
        }

    def load(self) -> dict[str, Any] | None:
        """Resolve the alias to a version and load that version."""
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        try:
            version = MlflowClient().get_model_version_by_alias(self._model_name, self._alias)
        except MlflowException as error:
            if self._required:
                raise DatasetError(
                    f"registered model '{self._model_name}' has no '{self._alias}' alias ({error.error_code}): "
                    "run the registration and promotion pipelines first"
                ) from error
            return None
        tags = dict(version.tags or {})
        where = f"model '{self._model_name}' version {version.version} (alias '{self._alias}')"
        try:
            threshold = float(tags[THRESHOLD_TAG]) if THRESHOLD_TAG in tags else None
        except ValueError:
            raise DatasetError(f"{where} has a non-numeric '{THRESHOLD_TAG}' tag {tags[THRESHOLD_TAG]!r}") from None
        if threshold is None and self._require_threshold:
            raise DatasetError(
                f"{where} has no '{THRESHOLD_TAG}' tag: register it through the registration pipeline, "
                "which tags the candidate's threshold"
            )
        entry = _model_entry(
            f"models:/{self._model_name}/{version.version}",
            self._flavor,
            name=self._model_name,
            alias=self._alias,
            version=str(version.version),
            run_id=version.run_id,
            tags=tags,
            operating_threshold=threshold,
        )
        logger.info("%s@%s = %s (run %s)", self._model_name, self._alias, entry["model_uri"], version.run_id)
        return entry

    def save(self, data: None) -> None:
        raise DatasetError("RegisteredModelAliasDataset is read-only: aliases move through the release pipelines")
