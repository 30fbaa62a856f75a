"""Release governance: who releases and under which policy.

*Who* is an identity the process can vouch for: the user it runs as (its uid, not ``$USER``), or
the authenticated user of an http(s) MLflow tracking server, never a name someone types.
*Policy* is the keys listed in ``governance.protected_params`` (``conf/base/parameters_governance.yml``):
their values come from the environment's configuration files only, so a ``kedro run --params``
naming one (or a block holding one, or a key inside one) is refused before any node runs, naming
the file to change. ``lakehouse_ml.hooks.GovernanceHooks`` applies both; the release pipelines
record the identity, the host and the policy on every alias move (``ml.model_promotions``) and
as tags on the version they release.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from omegaconf import OmegaConf

from lakehouse_ml.release import ReleaseRefusedError

# The block holding the policy's own definition. Protected whatever it lists, so no run can
# empty or shorten the list from the command line; an environment changes it in its files.
GOVERNANCE_KEY = "governance"
CONFIG_SUFFIXES = (".yml", ".yaml", ".json")


class PolicyOverrideError(ReleaseRefusedError):
    """A run that tries to set release policy or the releasing identity from outside the configuration files."""


# ---------------------------------------------------------------- who releases


def os_user() -> str:
    """The user this process runs as, from its uid: ``$USER``/``$LOGNAME`` are anyone's to set."""
    uid = os.getuid()
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except KeyError:  # containers often run a uid that has no passwd entry
        return f"uid:{uid}"


def release_identity(tracking_uri: str, environ: Mapping[str, str]) -> dict[str, str]:
    """Who releases: the tracking server's authenticated user where there is one, else the OS user.

    ``actor_source`` says which: ``os_user``, or ``mlflow_server:<host>``. The server user counts only
    with an http(s) tracking URI: every registry call of the run then authenticates as
    ``MLFLOW_TRACKING_USERNAME``, so (on a server with authentication on) a name without its
    password fails at the first registry read instead of being recorded. With a local store the
    variable proves nothing and is ignored.
    """
    location = urlsplit(tracking_uri)
    username = (environ.get("MLFLOW_TRACKING_USERNAME") or "").strip()
    if username and location.scheme in ("http", "https"):
        # host[:port] only: a URL's netloc may carry user:password@
        server = location.hostname or ""
        server = f"[{server}]" if ":" in server else server
        return {
            "actor": username,
            "actor_source": f"mlflow_server:{server}" + (f":{location.port}" if location.port else ""),
        }
    return {"actor": os_user(), "actor_source": "os_user"}


# ---------------------------------------------------------------- where the policy comes from


@dataclass(frozen=True)
class ConfigLayout:
    """An environment's configuration files: where its policy is read from and which file to change."""

    conf_source: Path
    base_env: str
    env: str
    patterns: tuple[str, ...]
    project_path: Path

    @classmethod
    def of(cls, loader: Any, project_path: Path | None = None) -> ConfigLayout:
        """The layout an ``OmegaConfigLoader`` reads (its env, else its default run env)."""
        conf_source = Path(loader.conf_source).resolve()
        return cls(
            conf_source=conf_source,
            base_env=loader.base_env,
            env=loader.env or loader.default_run_env,
            patterns=tuple(loader.config_patterns["parameters"]),
            project_path=Path(project_path or conf_source.parent).resolve(),
        )

    def files(self, env: str) -> list[Path]:
        """The parameter files of ``env``, in a stable order (Kedro's own glob patterns)."""
        folder = self.conf_source / env
        found: set[Path] = set()
        for pattern in self.patterns:
            # pathlib's trailing `**` matches folders only; Kedro's glob (fsspec) matches their files.
            for each in (pattern, f"{pattern}/*") if pattern.endswith("**") else (pattern,):
                found.update(folder.glob(each))
        return sorted(
            path
            for path in found
            if path.is_file()
            and path.suffix in CONFIG_SUFFIXES
            and not any(part.startswith(".") for part in path.relative_to(folder).parts)
        )

    def shown(self, path: Path) -> str:
        """``path`` as a person types it: relative to the project root when inside it."""
        try:
            return path.relative_to(self.project_path).as_posix()
        except ValueError:
            return path.as_posix()


@lru_cache(maxsize=256)
def _parsed(path: str, modified_ns: int) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}


def _raw(path: Path) -> dict[str, Any]:
    """A parameter file as written (interpolations unresolved); parsed once per version of the file."""
    return _parsed(str(path), path.stat().st_mtime_ns)


def _lookup(tree: Any, key: str) -> Iterator[Any]:
    """The values along ``key``'s dotted path in ``tree``, as far as the path exists."""
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return
        tree = tree[part]
        yield tree


def _strings(value: Any) -> Iterator[str]:
    """Every string in a nested value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for each in value.values():
            yield from _strings(each)
    elif isinstance(value, list):
        for each in value:
            yield from _strings(each)


def _defines(tree: dict[str, Any], key: str) -> bool:
    return len(list(_lookup(tree, key))) == len(key.split("."))


def _value(tree: dict[str, Any], key: str) -> Any:
    values = list(_lookup(tree, key))
    return values[-1] if len(values) == len(key.split(".")) else None


def _leaves(params: Any, prefix: str = "") -> Iterator[str]:
    """Every dotted key a nested runtime-parameter dict sets (a non-dict value is a leaf)."""
    if not isinstance(params, dict) or not params:
        if prefix:
            yield prefix
        return
    for key, value in params.items():
        yield from _leaves(value, f"{prefix}.{key}" if prefix else str(key))


def _touches(runtime_key: str, protected: str) -> bool:
    """Whether setting ``runtime_key`` changes ``protected``: the same key, a block holding it, or a key inside it."""
    return (
        runtime_key == protected or protected.startswith(runtime_key + ".") or runtime_key.startswith(protected + ".")
    )


def _listed(parameters: dict[str, Any], name: str) -> list[str]:
    return [str(key) for key in (parameters.get(GOVERNANCE_KEY) or {}).get(name) or []]


def sources(key: str, layout: ConfigLayout) -> list[str]:
    """The files that set ``key`` (or part of it) for the layout's env: the env's first, then base's."""
    envs = [layout.env] if layout.env == layout.base_env else [layout.env, layout.base_env]
    return [layout.shown(path) for env in envs for path in layout.files(env) if _defines(_raw(path), key)]


def file_to_change(key: str, layout: ConfigLayout) -> str:
    """Where the layout's env sets ``key``: the env file that does, else the env's file named like base's."""
    for path in layout.files(layout.env):
        if _defines(_raw(path), key):
            return layout.shown(path)
    base = layout.conf_source / layout.base_env
    name = next(
        (path.relative_to(base) for path in layout.files(layout.base_env) if _defines(_raw(path), key)),
        Path(f"parameters_{key.split('.')[0]}.yml"),
    )
    return layout.shown(layout.conf_source / layout.env / name)


# ---------------------------------------------------------------- the checks and the record


def check_runtime_params(runtime_params: dict[str, Any], parameters: dict[str, Any], layout: ConfigLayout) -> None:
    """Refuse a run whose runtime parameters touch release policy or name an actor (every offence listed).

    ``parameters`` are the run's merged parameters: the ``governance`` block in them comes from the
    files, since setting it at run time is itself refused. A protected value in a file that reads
    ``${runtime_params:…}`` is refused too: it would be a run-time override by another route.
    """
    protected, identity = _listed(parameters, "protected_params"), _listed(parameters, "identity_params")
    refusals = []
    for key in _leaves(runtime_params or {}):
        if _touches(key, GOVERNANCE_KEY):
            refusals.append(
                f"{key} defines which settings are release policy of env '{layout.env}' and cannot be set at run time; "
                f"change it in {file_to_change(key, layout)} (reviewed like code), not with --params {key}"
            )
            continue
        for name in identity:
            if _touches(key, name):
                refusals.append(
                    f"{name} cannot be set (--params {key}): the actor of a release is the identity this process runs as "
                    f"(the OS user '{os_user()}' here, or the authenticated user of an http(s) MLflow tracking server), "
                    "recorded with the host on every release. Run the release as the person releasing"
                )
        for name in protected:
            if _touches(key, name):
                refusals.append(
                    f"{name} is release policy of env '{layout.env}' and cannot be overridden at run time; "
                    f"change it in {file_to_change(name, layout)} (reviewed like code), not with --params {key}"
                )
    for name in protected:
        for env in dict.fromkeys([layout.base_env, layout.env]):
            for path in layout.files(env):
                tree = _raw(path)
                # A block above the key that is an interpolation, or the key's own value (all of it).
                read = [v for v in _lookup(tree, name) if isinstance(v, str)]
                read += list(_strings(_value(tree, name)))
                if any("runtime_params:" in text for text in read):
                    refusals.append(
                        f"{name} is release policy of env '{layout.env}' but {layout.shown(path)} reads it from "
                        "${runtime_params:…}, i.e. from the command line; write the value itself there (reviewed like code)"
                    )
    if refusals:
        raise PolicyOverrideError("refused before any node ran:\n- " + "\n- ".join(dict.fromkeys(refusals)))


def release_policy(parameters: dict[str, Any], layout: ConfigLayout) -> dict[str, Any]:
    """The policy a release runs under: the env, each protected key's value and the files it came from."""
    protected = _listed(parameters, "protected_params")
    return {
        "env": layout.env,
        "settings": {name: _value(parameters, name) for name in protected},
        "sources": {name: sources(name, layout) for name in protected},
    }


def policy_sha256(policy: dict[str, Any]) -> str:
    """A short hash of what the policy decides (env and values; not where the files were)."""
    basis = json.dumps({"env": policy["env"], "settings": policy["settings"]}, sort_keys=True, default=str)
    return hashlib.sha256(basis.encode()).hexdigest()[:16]


def release_governance(
    parameters: dict[str, Any], layout: ConfigLayout, tracking_uri: str, environ: Mapping[str, str]
) -> dict[str, Any]:
    """What every release of this run records: actor and how it is known, host, policy and its hash."""
    policy = release_policy(parameters, layout)
    return {
        **release_identity(tracking_uri, environ),
        "host": socket.gethostname(),
        "policy": policy,
        "policy_sha256": policy_sha256(policy),
    }
