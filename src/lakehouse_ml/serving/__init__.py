"""The online scoring service: ``python -m lakehouse_ml.serving --env local --port 8080``.

It serves ``models:/<churn_model_name>@champion`` (resolved to a version, reported by ``/version``),
optionally a canary or shadow ``@challenger``, scores feature rows or customers looked up in the
online store, and logs every scored row to ``<catalog>.monitoring.inference_log``. See
:mod:`lakehouse_ml.serving.app` for the endpoints (a router module each for scoring, admin and probes)
and ``conf/base/parameters_serving.yml`` for the settings.
"""

from lakehouse_ml.serving.app import create_app
from lakehouse_ml.serving.config import ServingSettings, load_settings

__all__ = ["ServingSettings", "create_app", "load_settings"]
