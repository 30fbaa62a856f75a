"""Serving settings from the project's real configuration: the token, and refusals naming the key."""

from __future__ import annotations

import os
import shutil

import pytest

from lakehouse_ml.features.on_demand import parse_on_demand
from lakehouse_ml.serving.config import (
    ONLINE_STORE_PASSWORD_VARIABLE,
    TOKEN_VARIABLE,
    SettingsError,
    Traffic,
    load_settings,
)
from tests.helpers import PROJECT_ROOT


@pytest.fixture
def conf(tmp_path, monkeypatch):
    """A copy of the project's conf/ (to add a credentials file), without a token in the environment."""
    monkeypatch.delenv(TOKEN_VARIABLE, raising=False)
    target = tmp_path / "conf"
    shutil.copytree(PROJECT_ROOT / "conf", target, ignore=shutil.ignore_patterns("credentials*"))
    return target


def test_the_service_refuses_to_start_without_a_token(conf):
    with pytest.raises(SettingsError, match=f"no serving token: set {TOKEN_VARIABLE} or `serving: {{token: ...}}`"):
        load_settings("local", conf)


def test_the_token_comes_from_credentials_and_the_environment_wins(conf, monkeypatch):
    (conf / "local" / "credentials.yml").write_text("serving:\n  token: from-credentials\n")
    assert load_settings("local", conf).token == "from-credentials"
    monkeypatch.setenv(TOKEN_VARIABLE, "from-environment")
    assert load_settings("local", conf).token == "from-environment"


def test_auth_can_be_disabled_explicitly_for_local_use(conf):
    assert load_settings("local", conf, overrides={"auth": "disabled"}).token is None
    with pytest.raises(SettingsError, match="serving.auth: expected required or disabled, got 'off'"):
        load_settings("local", conf, overrides={"auth": "off"})


def test_settings_follow_the_environment(conf, monkeypatch):
    monkeypatch.setenv(TOKEN_VARIABLE, "t")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)  # an earlier session in this process may have set it
    staging = load_settings("staging", conf)
    assert staging.model_name == "staging.ml.churn_classifier"
    assert staging.inference_log.path == "data/lakehouse/staging/monitoring/inference_log"
    assert staging.online_store == {"type": "sqlite", "path": "data/07_model_output/staging/online_store.db"}
    assert staging.tracking_uri == staging.registry_uri == "sqlite:///elsewhere.db"
    assert set(staging.contracts) == {"customer_activity", "customer_profile"} and set(staging.lookups) == set(
        staging.contracts
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"traffic": {"mode": "blue", "share": 0}},
            r"serving.traffic.mode: expected one of \['off', 'canary', 'shadow'\], got 'blue'",
        ),
        ({"traffic": {"mode": "canary", "share": 2}}, r"serving.traffic.share: expected a number in \[0, 1\], got 2"),
        (
            {"on_contract_violation": "ignore"},
            r"serving.on_contract_violation: expected one of \['refuse', 'flag'\], got 'ignore'",
        ),
        ({"max_batch_size": 0}, "serving.max_batch_size: expected a positive integer, got 0"),
        ({"max_string_length": 0}, "serving.max_string_length: expected a positive integer, got 0"),
        ({"startup_wait_s": -1}, r"serving.startup_wait_s: expected >= 0, got -1.0"),
        # The range moved to the one declaration of the feature: the old key is refused, not ignored.
        (
            {"on_demand_inputs": {"tenure_days": {"range": [0, 10]}}},
            "serving.on_demand_inputs: no longer read; declare the feature once in on_demand_features",
        ),
    ],
)
def test_inconsistent_settings_are_refused_naming_the_key(conf, monkeypatch, overrides, message):
    monkeypatch.setenv(TOKEN_VARIABLE, "t")
    with pytest.raises(SettingsError, match=message):
        load_settings("local", conf, overrides=overrides)


def test_on_demand_features_are_the_projects_declarations(conf, monkeypatch):
    monkeypatch.setenv(TOKEN_VARIABLE, "t")
    settings = load_settings("local", conf)
    tenure = parse_on_demand(settings.on_demand_features)["tenure_days"]
    assert (tenure.minimum, tenure.maximum, tenure.type) == (0.0, 36500.0, "integer")
    assert settings.max_string_length == 256


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ("{range: [10, 0]}", "on_demand_features.tenure_days.range: min 10 is above max 0"),
        (
            "{type: int}",
            r"on_demand_features.tenure_days.type: expected one of \['integer', 'number', 'category'\], got 'int'",
        ),
    ],
)
def test_a_malformed_on_demand_feature_stops_the_service_at_start(conf, monkeypatch, declared, message):
    monkeypatch.setenv(TOKEN_VARIABLE, "t")
    (conf / "local" / "parameters_on_demand_features.yml").write_text(
        f"on_demand_features:\n  tenure_days: {declared}\n"
    )
    with pytest.raises(SettingsError, match=message):
        load_settings("local", conf)


def test_an_environment_removes_an_on_demand_feature_with_null(conf, monkeypatch):
    monkeypatch.setenv(TOKEN_VARIABLE, "t")
    (conf / "local" / "parameters_on_demand_features.yml").write_text("on_demand_features:\n  tenure_days: null\n")
    assert parse_on_demand(load_settings("local", conf).on_demand_features) == {}


def test_a_traffic_share_is_a_number():
    with pytest.raises(SettingsError, match="got True"):
        Traffic("canary", True)


def _team_store(conf, url: str = "redis://127.0.0.1:6390/0") -> None:
    (conf / "local" / "parameters_serving.yml").write_text(
        f"serving:\n  online_store:\n    type: redis\n    path: null\n    url: {url}\n    namespace: lakehouse_ml:dev\n"
    )


def test_the_online_store_password_comes_from_credentials_and_the_environment_wins(conf, monkeypatch):
    monkeypatch.setenv(TOKEN_VARIABLE, "t")
    monkeypatch.delenv(ONLINE_STORE_PASSWORD_VARIABLE, raising=False)
    _team_store(conf)
    assert load_settings("local", conf).online_store == {
        "type": "redis",
        "url": "redis://127.0.0.1:6390/0",
        "namespace": "lakehouse_ml:dev",
    }
    (conf / "local" / "credentials.yml").write_text("online_store:\n  username: svc\n  password: from-credentials-pw\n")
    settings = load_settings("local", conf)
    assert settings.online_store["password"] == "from-credentials-pw" and settings.online_store["username"] == "svc"
    assert "from-credentials-pw" not in repr(settings)
    monkeypatch.setenv(ONLINE_STORE_PASSWORD_VARIABLE, "from-environment-pw")
    assert load_settings("local", conf).online_store["password"] == "from-environment-pw"
    # SQLite takes no credentials: an online_store entry meant for the team's Redis does not reach it.
    assert load_settings(
        "local", conf, overrides={"online_store": {"type": "sqlite", "path": "x.db"}}
    ).online_store == {"type": "sqlite", "path": "x.db"}


def test_a_password_in_the_serving_parameters_is_refused(conf, monkeypatch):
    monkeypatch.setenv(TOKEN_VARIABLE, "t")
    with pytest.raises(
        SettingsError,
        match=f"serving.online_store.password: a password is not a parameter; set {ONLINE_STORE_PASSWORD_VARIABLE}",
    ):
        load_settings(
            "local", conf, overrides={"online_store": {"type": "redis", "url": "redis://h:1/0", "password": "x"}}
        )


@pytest.fixture
def mlflow_environment(monkeypatch):
    """MLflow's credential variables unset, and restored after the test (load_settings sets them)."""
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(key, "")  # records the variable's state, so undo removes what load_settings sets
        monkeypatch.delenv(key)
    return monkeypatch


def test_mlflow_credentials_named_by_mlflow_yml_are_exported_whole_as_a_kedro_run_does(conf, mlflow_environment):
    mlflow_environment.setenv(TOKEN_VARIABLE, "t")
    load_settings("local", conf)  # server.credentials null: nothing exported
    assert "MLFLOW_TRACKING_USERNAME" not in os.environ
    (conf / "local" / "mlflow.yml").write_text("server:\n  credentials: mlflow_team\n")
    (conf / "local" / "credentials.yml").write_text(
        "mlflow_team:\n  MLFLOW_TRACKING_USERNAME: alice\n  MLFLOW_TRACKING_PASSWORD: from-credentials\n"
    )
    mlflow_environment.setenv("MLFLOW_TRACKING_PASSWORD", "from-environment")
    load_settings("local", conf)  # the entry, whole: never alice with another user's password
    assert (
        os.environ["MLFLOW_TRACKING_USERNAME"] == "alice"
        and os.environ["MLFLOW_TRACKING_PASSWORD"] == "from-credentials"
    )
    (conf / "local" / "credentials.yml").write_text("other: {}\n")  # no entry: the environment's, as they are
    mlflow_environment.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    mlflow_environment.setenv("MLFLOW_TRACKING_PASSWORD", "from-environment")
    load_settings("local", conf)
    assert (
        os.environ["MLFLOW_TRACKING_USERNAME"] == "bob" and os.environ["MLFLOW_TRACKING_PASSWORD"] == "from-environment"
    )


@pytest.mark.services
def test_the_service_settings_reach_an_mlflow_server_with_basic_auth(conf, mlflow_environment, mlflow_server):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    mlflow_server.add_user("serving-bot", "serving-bot-pw-1")
    mlflow_environment.setenv(TOKEN_VARIABLE, "t")
    mlflow_environment.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    with pytest.raises(MlflowException, match="401|Unauthorized|credentials"):
        MlflowClient(mlflow_server.url).search_experiments()
    (conf / "local" / "mlflow.yml").write_text("server:\n  credentials: mlflow_team\n")
    (conf / "local" / "credentials.yml").write_text(
        "mlflow_team:\n  MLFLOW_TRACKING_USERNAME: serving-bot\n  MLFLOW_TRACKING_PASSWORD: serving-bot-pw-1\n"
    )
    settings = load_settings("local", conf)
    assert settings.tracking_uri == mlflow_server.url
    assert MlflowClient(settings.tracking_uri, settings.registry_uri).search_experiments()  # the Default experiment
