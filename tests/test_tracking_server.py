"""Which tracking server and credentials a session uses, as the session's check reads them."""

from __future__ import annotations

from pathlib import Path

import pytest

from lakehouse_ml.tracking_server import TrackingServerError, check_tracking_server, shown_uri, tracking_target
from tests.services.servers import free_port

ENTRY = {"MLFLOW_TRACKING_USERNAME": "ann", "MLFLOW_TRACKING_PASSWORD": "from-file"}
VARIABLES = {
    "MLFLOW_TRACKING_USERNAME": "bob",
    "MLFLOW_TRACKING_PASSWORD": "from-env",
    "MLFLOW_TRACKING_URI": "http://env:1",
}


def _target(conf: Path, server: dict, credentials: dict, environ: dict):
    return tracking_target(
        {"server": server}, credentials, environ, conf_source=conf, envs=["team", "base"], patterns=["mlflow*"]
    )


@pytest.fixture
def conf(tmp_path) -> Path:
    (tmp_path / "conf/team").mkdir(parents=True)
    (tmp_path / "conf/base").mkdir(parents=True)
    (tmp_path / "conf/team/mlflow.yml").write_text("server:\n  mlflow_tracking_uri: http://team:5000\n")
    return tmp_path / "conf"


def test_the_credentials_entry_wins_over_the_environment_as_kedro_mlflow_exports_it(conf):
    target = _target(
        conf,
        {"mlflow_tracking_uri": "http://team:5000", "credentials": "mlflow_team"},
        {"mlflow_team": ENTRY},
        VARIABLES,
    )
    assert (target.uri, target.username, target.password) == ("http://team:5000", "ann", "from-file")
    assert target.uri_setting == "server.mlflow_tracking_uri in conf/team/mlflow.yml"
    assert (
        "'mlflow_team' entry" in target.credentials_setting
        and "conf/team/credentials.yml" in target.credentials_setting
    )


def test_without_the_entry_the_environment_variables_are_used_and_named(conf):
    target = _target(conf, {"mlflow_tracking_uri": "http://team:5000", "credentials": "mlflow_team"}, {}, VARIABLES)
    assert (target.username, target.password) == ("bob", "from-env")
    assert target.credentials_setting.startswith(
        "no 'mlflow_team' entry in conf/team/credentials.yml, so the environment variables"
    )


def test_the_uri_variable_counts_when_mlflow_yml_sets_none_and_local_stores_are_not_checked(conf):
    assert _target(conf, {"mlflow_tracking_uri": None}, {}, VARIABLES).uri_setting == "MLFLOW_TRACKING_URI"
    assert _target(conf, {"mlflow_tracking_uri": "sqlite:////tmp/mlflow.db"}, {}, VARIABLES) is None
    assert _target(conf, {"mlflow_tracking_uri": None}, {}, {}) is None


def test_shown_uris_carry_no_password():
    assert shown_uri("https://ann:s3cret@mlflow.example:443/x") == "https://mlflow.example:443/x"
    assert shown_uri("sqlite:////abs/mlflow.db") == "sqlite:////abs/mlflow.db"


def test_a_closed_port_is_refused_at_once_naming_url_and_setting(conf):
    url = f"http://127.0.0.1:{free_port()}"
    target = _target(conf, {"mlflow_tracking_uri": url}, {}, {})
    with pytest.raises(
        TrackingServerError,
        match=rf"at {url} does not answer .*correct server.mlflow_tracking_uri in conf/team/mlflow.yml",
    ):
        check_tracking_server(target, timeout=2)
