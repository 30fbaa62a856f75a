"""Settings of the scoring service for one Kedro environment, read through Kedro's configuration loader.

``serving`` parameters (``conf/<env>/parameters_serving.yml``), the model name (globals
``churn_model_name``), the feature contracts (``feature_tables``), the on-demand features
(``on_demand_features``) and
the lookups the training set resolves (``training_set.lookup_defaults`` and ``lookups``), the MLflow store (``mlflow.yml``) and the bearer token
(``LAKEHOUSE_ML_SERVING_TOKEN``, else ``conf/<env>/credentials.yml`` key ``serving.token``).

Secrets come from the environment first, else ``conf/<env>/credentials.yml``, never from parameters:
the online store's password (``LAKEHOUSE_ML_ONLINE_STORE_PASSWORD``, else key ``online_store``:
``{password}`` or ``{username, password}``), and, as kedro-mlflow does, the entries of the key that
``mlflow.yml`` ``server.credentials`` names (e.g. ``MLFLOW_TRACKING_USERNAME`` /
``MLFLOW_TRACKING_PASSWORD`` for an MLflow server with basic auth) exported as environment
variables, except those the environment already sets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TOKEN_VARIABLE = "LAKEHOUSE_ML_SERVING_TOKEN"
ONLINE_STORE_PASSWORD_VARIABLE = "LAKEHOUSE_ML_ONLINE_STORE_PASSWORD"
TRAFFIC_MODES = ("off", "canary", "shadow")
VIOLATION_POLICIES = ("refuse", "flag")


class SettingsError(ValueError):
    """The serving configuration is incomplete or inconsistent."""


# What "now" is for online lookups: the wall clock, or the time the online store was published as of
# (the lakehouse's own clock: a simulated business, or a replay of past data, lives in the past).
REQUEST_TIMES = ("now", "online_store")


@dataclass(frozen=True)
class Traffic:
    """How the challenger takes part: ``off``, ``canary`` (a share of customers) or ``shadow``."""

    mode: str = "off"
    share: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in TRAFFIC_MODES:
            raise SettingsError(f"serving.traffic.mode: expected one of {list(TRAFFIC_MODES)}, got {self.mode!r}")
        if not isinstance(self.share, (int, float)) or isinstance(self.share, bool) or not 0.0 <= self.share <= 1.0:
            raise SettingsError(f"serving.traffic.share: expected a number in [0, 1], got {self.share!r}")


@dataclass(frozen=True)
class InferenceLogSettings:
    """Where and how often scored rows are flushed to Delta."""

    path: str
    flush_rows: int = 10_000
    flush_interval_s: float = 5.0
    max_buffer_rows: int = 100_000


@dataclass(frozen=True)
class ServingSettings:
    """Everything the service needs; ``token`` None means authentication is disabled."""

    env: str
    model_name: str
    token: str | None
    inference_log: InferenceLogSettings
    contracts: dict[str, dict[str, Any]]
    lookups: dict[str, Any]
    # Not in repr: a server-backed store's options carry its password.
    online_store: dict[str, Any] | None = field(default=None, repr=False)
    aliases: dict[str, str] = field(default_factory=lambda: {"champion": "champion", "challenger": "challenger"})
    traffic: Traffic = Traffic()
    max_batch_size: int = 100
    max_body_bytes: int = 1 << 20
    max_string_length: int = 256
    on_demand_features: dict[str, Any] = field(default_factory=dict)
    poll_interval_s: float = 60.0
    on_contract_violation: str = "refuse"
    request_time: str = "now"
    shadow_queue: int = 64
    model_threads: int = 1
    online_store_retry_s: float = 5.0
    startup_wait_s: float = 30.0
    tracking_uri: str | None = None
    registry_uri: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080

    def __post_init__(self) -> None:
        if self.on_contract_violation not in VIOLATION_POLICIES:
            raise SettingsError(
                f"serving.on_contract_violation: expected one of {list(VIOLATION_POLICIES)}, got {self.on_contract_violation!r}"
            )
        if self.request_time not in REQUEST_TIMES:
            raise SettingsError(
                f"serving.request_time: expected one of {list(REQUEST_TIMES)}, got {self.request_time!r}"
            )
        if set(self.aliases) != {"champion", "challenger"}:
            raise SettingsError(
                f"serving.aliases: expected the keys champion and challenger, got {sorted(self.aliases)}"
            )
        for key in ("max_batch_size", "max_body_bytes", "max_string_length", "shadow_queue"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise SettingsError(f"serving.{key}: expected a positive integer, got {getattr(self, key)!r}")
        if not isinstance(self.model_threads, int) or self.model_threads < 0:
            raise SettingsError(
                f"serving.model_threads: expected an integer >= 0 (0 = the libraries' default), got {self.model_threads!r}"
            )
        if self.online_store_retry_s < 0:
            raise SettingsError(f"serving.online_store_retry_s: expected >= 0, got {self.online_store_retry_s!r}")
        if self.startup_wait_s < 0:
            raise SettingsError(f"serving.startup_wait_s: expected >= 0, got {self.startup_wait_s!r}")
        if self.poll_interval_s < 0:
            raise SettingsError(
                f"serving.poll_interval_s: expected >= 0 (0 = no polling), got {self.poll_interval_s!r}"
            )


def _credentials(config: Any) -> dict[str, Any]:
    """``conf/<env>/credentials.yml`` (and base's), empty when there is none."""
    from kedro.config import MissingConfigException

    try:
        return dict(config["credentials"] or {})
    except MissingConfigException:
        return {}


def _token(config: Any, auth: str) -> str | None:
    """The bearer token (environment first); None only when auth is explicitly disabled."""
    if auth not in ("required", "disabled"):
        raise SettingsError(f"serving.auth: expected required or disabled, got {auth!r}")
    if auth == "disabled":
        return None
    token = os.environ.get(TOKEN_VARIABLE)
    if not token:
        token = (_credentials(config).get("serving") or {}).get("token")
    if not token:
        raise SettingsError(
            f"no serving token: set {TOKEN_VARIABLE} or `serving: {{token: ...}}` in conf/<env>/credentials.yml "
            "(or serving.auth: disabled for local use only)"
        )
    return str(token)


def _online_store(store: dict[str, Any] | None, config: Any) -> dict[str, Any] | None:
    """The online store's options with its credentials (a server-backed store; SQLite has none)."""
    if not store:
        return None
    if "password" in store:
        raise SettingsError(
            f"serving.online_store.password: a password is not a parameter; set {ONLINE_STORE_PASSWORD_VARIABLE} "
            "or `online_store: {password: ...}` in conf/<env>/credentials.yml"
        )
    # Parameters merge softly across environments: one switching to a server clears base's path with null.
    store = {k: v for k, v in store.items() if v is not None}
    if store.get("type") == "sqlite":
        return store
    entry = _credentials(config).get("online_store") or {}
    if not isinstance(entry, dict):
        raise SettingsError(
            "credentials.yml online_store: expected a mapping such as {password: ...} or {username: ..., password: ...}"
        )
    secrets = {k: v for k, v in entry.items() if k in ("username", "password") and v}
    if os.environ.get(ONLINE_STORE_PASSWORD_VARIABLE):
        secrets["password"] = os.environ[ONLINE_STORE_PASSWORD_VARIABLE]
    return {**store, **secrets}


def export_mlflow_credentials(config: Any, server: dict[str, Any]) -> list[str]:
    """Set the entries of the credentials key ``server.credentials`` names as environment
    variables; the names set. The rule of a ``kedro run`` (kedro-mlflow exports the entry over the
    environment), whole: a user name from one place never meets a password from another. Without
    the entry, the environment's variables are used as they are."""
    name = server.get("credentials")
    if not name:
        return []
    entry = _credentials(config).get(str(name)) or {}
    if not isinstance(entry, dict):
        raise SettingsError(
            f"credentials.yml {name} (mlflow.yml server.credentials): expected a mapping of environment variables"
        )
    exported = [str(key) for key, value in entry.items() if value is not None]
    for key in exported:
        os.environ[key] = str(entry[key])
    return exported


def _mlflow_uris(server: dict[str, Any]) -> dict[str, str | None]:
    """MLflow's environment variables win over mlflow.yml (a registry follows its tracking store)."""
    tracking = os.environ.get("MLFLOW_TRACKING_URI")
    if tracking:
        return {"tracking_uri": tracking, "registry_uri": os.environ.get("MLFLOW_REGISTRY_URI") or tracking}
    return {"tracking_uri": server.get("mlflow_tracking_uri"), "registry_uri": server.get("mlflow_registry_uri")}


def load_settings(
    env: str = "local", conf_source: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> ServingSettings:
    """The service's settings for Kedro environment ``env`` (``overrides`` patch ``serving`` keys)."""
    from kedro.config import OmegaConfigLoader

    from lakehouse_ml.configuration import CONFIG_LOADER_ARGS, project_root

    config = OmegaConfigLoader(
        conf_source=str(conf_source or project_root("conf")),
        env=env,
        **{k: v for k, v in CONFIG_LOADER_ARGS.items() if k != "default_run_env"},
    )
    from lakehouse_ml.features.contracts import ContractError
    from lakehouse_ml.features.on_demand import parse_on_demand
    from lakehouse_ml.features.tables import contract_configs, parsed_contracts, resolve_lookups

    params = config["parameters"]
    tables = contract_configs(params.get("feature_tables"))
    serving = {**(params.get("serving") or {}), **(overrides or {})}
    if not serving:
        raise SettingsError(f"no `serving` parameters in conf/base or conf/{env} (parameters_serving.yml)")
    if "on_demand_inputs" in serving:
        raise SettingsError(
            "serving.on_demand_inputs: no longer read; declare the feature once in on_demand_features "
            "(conf/<env>/parameters_on_demand_features.yml), with its computation, type and range"
        )
    on_demand = dict(params.get("on_demand_features") or {})
    try:
        parse_on_demand(on_demand)  # refused at start, not at the first request
    except ContractError as error:
        raise SettingsError(str(error)) from None
    server = config["mlflow"].get("server") or {}
    export_mlflow_credentials(config, server)  # before any MLflow client is made
    log = serving.get("inference_log") or {}
    return ServingSettings(
        env=env,
        model_name=str(config["globals"]["churn_model_name"]),
        token=_token(config, str(serving.get("auth", "required"))),
        inference_log=InferenceLogSettings(
            path=str(log["path"]),
            flush_rows=int(log.get("flush_rows", 10_000)),
            flush_interval_s=float(log.get("flush_interval_s", 5)),
            max_buffer_rows=int(log.get("max_buffer_rows", 100_000)),
        ),
        contracts=tables,
        lookups=resolve_lookups(parsed_contracts(tables), params.get("training_set") or {}),
        online_store=_online_store(serving.get("online_store"), config),
        aliases=dict(serving.get("aliases") or {"champion": "champion", "challenger": "challenger"}),
        traffic=Traffic(**(serving.get("traffic") or {})),
        max_batch_size=int(serving.get("max_batch_size", 100)),
        max_body_bytes=int(serving.get("max_body_bytes", 1 << 20)),
        max_string_length=int(serving.get("max_string_length", 256)),
        on_demand_features=on_demand,
        poll_interval_s=float(serving.get("poll_interval_s", 60)),
        on_contract_violation=str(serving.get("on_contract_violation", "refuse")),
        request_time=str(serving.get("request_time", "now")),
        shadow_queue=int(serving.get("shadow_queue", 64)),
        model_threads=int(serving.get("model_threads", 1)),
        online_store_retry_s=float(serving.get("online_store_retry_s", 5)),
        startup_wait_s=float(serving.get("startup_wait_s", 30)),
        **_mlflow_uris(server),
        host=str(serving.get("host", "127.0.0.1")),
        port=int(serving.get("port", 8080)),
    )
