"""A quick check of an http(s) MLflow tracking server before a Kedro session uses it.

kedro-mlflow contacts the server as the session starts, through MLflow's client, which retries a
server that does not answer for minutes and then reports a bare ``MaxRetryError`` with a URL path;
a wrong password surfaces as an ``MlflowException`` that names neither the setting nor the file.
``TrackingServerHooks`` asks the server one authenticated question first, with a short timeout and
no retry, and refuses the run with an error naming the service, its URL and the setting to
correct. The password is never part of a message.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

USERNAME, PASSWORD = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"
URI_KEY = "server.mlflow_tracking_uri"
# An authenticated read every user may do: the server's answer says whether it runs and who we are.
PROBE_PATH = "/api/2.0/mlflow/experiments/search"
PROBE_TIMEOUT_S = 10.0


class TrackingServerError(RuntimeError):
    """The MLflow tracking server of the run does not answer or refuses its credentials."""


@dataclass(frozen=True)
class TrackingTarget:
    """Where a session's MLflow server is, which credentials it sends and where both are set."""

    uri: str
    uri_setting: str  # e.g. "server.mlflow_tracking_uri in conf/team/mlflow.yml"
    username: str | None
    password: str | None = field(repr=False)  # never in a repr (tracebacks, debug logs)
    credentials_setting: str  # e.g. "the 'mlflow_team' entry of conf/team/credentials.yml"


def shown_uri(uri: str) -> str:
    """An http(s) URI without user information (a URL may carry ``user:password@``); others as they are."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return uri
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()


def _setting_file(conf_source: Path, envs: list[str], patterns: list[str], key: str) -> str | None:
    """The first mlflow file (env first, then base) that sets ``key``, relative to the conf folder's parent."""
    from omegaconf import OmegaConf

    for env in envs:
        for pattern in patterns:
            for path in sorted((conf_source / env).glob(pattern)):
                if not path.is_file() or path.suffix not in (".yml", ".yaml"):
                    continue
                tree: Any = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
                for part in key.split("."):
                    tree = tree.get(part) if isinstance(tree, dict) else None
                if tree is not None:
                    return path.relative_to(conf_source.parent).as_posix()
    return None


def tracking_target(
    mlflow_conf: Mapping[str, Any],
    credentials: Mapping[str, Any],
    environ: Mapping[str, str],
    *,
    conf_source: Path,
    envs: list[str],
    patterns: list[str],
) -> TrackingTarget | None:
    """The server a session of this configuration tracks to (``None`` unless it is http(s)).

    As kedro-mlflow resolves it: ``server.mlflow_tracking_uri`` of mlflow.yml, else
    ``MLFLOW_TRACKING_URI``; the credentials entry named by ``server.credentials`` (kedro-mlflow
    exports it over the environment), else ``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``.
    """
    server = mlflow_conf.get("server") or {}
    uri = server.get("mlflow_tracking_uri")
    if uri:
        where = _setting_file(conf_source, envs, patterns, URI_KEY)
        uri_setting = f"{URI_KEY} in {where}" if where else URI_KEY
    else:
        uri, uri_setting = environ.get("MLFLOW_TRACKING_URI"), "MLFLOW_TRACKING_URI"
    if not uri or urlsplit(str(uri)).scheme not in ("http", "https"):
        return None
    entry_name = server.get("credentials")
    entry = credentials.get(entry_name) if entry_name else None
    credentials_file = f"conf/{envs[0]}/credentials.yml"
    if entry:
        setting = f"the '{entry_name}' entry ({USERNAME}, {PASSWORD}) of {credentials_file}"
        username, password = entry.get(USERNAME), entry.get(PASSWORD)
    else:
        named = f"no '{entry_name}' entry in {credentials_file}, so " if entry_name else ""
        setting = f"{named}the environment variables {USERNAME} and {PASSWORD}"
        username, password = environ.get(USERNAME), environ.get(PASSWORD)
    return TrackingTarget(str(uri), uri_setting, username or None, password or None, setting)


def check_tracking_server(target: TrackingTarget, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Ask the server one authenticated question; raise ``TrackingServerError`` naming what to fix."""
    import requests

    shown = shown_uri(target.uri)
    auth = (target.username, target.password or "") if target.username else None
    try:
        answer = requests.get(
            target.uri.rstrip("/") + PROBE_PATH,
            params={"max_results": 1},
            auth=auth,
            timeout=timeout,
        )
    except requests.RequestException as error:
        raise TrackingServerError(
            f"the MLflow tracking server at {shown} does not answer ({type(error).__name__}): start it, "
            f"or correct {target.uri_setting}"
        ) from None  # the chained error repeats the URL with its query and adds nothing to act on
    if answer.status_code == 401:
        who = f"user '{target.username}'" if target.username else "no user (none is set)"
        raise TrackingServerError(
            f"the MLflow tracking server at {shown} refused the credentials of {who} (HTTP 401): "
            f"check {target.credentials_setting}"
        )
    if answer.status_code == 403:
        raise TrackingServerError(
            f"the MLflow tracking server at {shown} denies user '{target.username}' (HTTP 403): "
            "ask its administrator for a permission on the experiment"
        )
    if answer.status_code >= 400:
        raise TrackingServerError(
            f"the MLflow tracking server at {shown} answered HTTP {answer.status_code} to a search: "
            f"is {target.uri_setting} an MLflow server?"
        )
