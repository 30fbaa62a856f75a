"""The candidate model logged to MLflow with a signature computed by the node (kedro-mlflow's dataset)."""

from __future__ import annotations

from typing import Any

from kedro_mlflow.io.models import MlflowModelTrackingDataset


class MlflowSignedModelDataset(MlflowModelTrackingDataset):
    """kedro-mlflow's model tracking dataset, saved from ``{model, signature, input_example}``.

    A signature depends on the data the model was fitted on, so it cannot be written in the
    catalog: the node returns it beside the model and this dataset passes both to the flavor's
    ``log_model`` (with the catalog's ``save_args``, e.g. ``name`` and ``pyfunc_predict_fn``).
    After saving, the logged model's URI and id are tagged on the active run
    (``candidate_model_uri``, ``candidate_model_id``) so later pipelines can find it by run.
    ``load`` is kedro-mlflow's: the model last saved, or ``load_args.model_uri``.
    """

    def _save(self, data: dict[str, Any]) -> None:
        if not isinstance(data, dict) or "model" not in data:
            raise TypeError(
                f"MlflowSignedModelDataset saves a dict {{model, signature, input_example}}; got {type(data).__name__}"
            )
        extra = {k: data[k] for k in ("signature", "input_example") if data.get(k) is not None}
        saved_args = self._save_args
        self._save_args = {**saved_args, **extra}
        try:
            super()._save(data["model"])
        finally:
            self._save_args = saved_args
        if self.model_info is not None:
            import mlflow

            if mlflow.active_run() is not None:
                mlflow.set_tags(
                    {"candidate_model_uri": self.model_info.model_uri, "candidate_model_id": self.model_info.model_id}
                )
