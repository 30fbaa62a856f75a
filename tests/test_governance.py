"""Release governance on the project's real configuration: which run-time parameters are refused
(and which file the refusal names), the policy and its sources per environment, the releasing
identity, the hook around a Kedro context, and the audit table gaining the new columns.
The real `kedro run` refusals and records: tests/test_cli.py."""

from __future__ import annotations

import json
import pwd
import shutil
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
from deltalake import DeltaTable, write_deltalake
from kedro.io import DataCatalog

from lakehouse_ml.datasets import AuditTableDataset, PandasDeltaDataset
from lakehouse_ml.governance import (
    ConfigLayout,
    PolicyOverrideError,
    check_runtime_params,
    os_user,
    policy_sha256,
    release_governance,
    release_identity,
    release_policy,
)
from lakehouse_ml.hooks import GovernanceHooks
from lakehouse_ml.release import AUDIT_COLUMNS, record_alias_moves, release_event
from tests.helpers import PROJECT_ROOT, project_config
from tests.pipelines.registration.releases import CONTEXT, GOVERNANCE, state, version

ME = pwd.getpwuid(__import__("os").getuid()).pw_name


def _check(env: str, runtime: dict, conf_source: Path | None = None) -> None:
    config = project_config(env, runtime, conf_source)
    check_runtime_params(runtime, config["parameters"], ConfigLayout.of(config))


def _refusal(env: str, runtime: dict, conf_source: Path | None = None) -> str:
    with pytest.raises(PolicyOverrideError) as refused:
        _check(env, runtime, conf_source)
    return str(refused.value)


# ---------------------------------------------------------------- who releases


def test_the_os_user_comes_from_the_uid_not_from_variables_anyone_sets(monkeypatch):
    for variable in ("USER", "LOGNAME", "LNAME", "USERNAME", "LAKEHOUSE_ML_ACTOR"):
        monkeypatch.setenv(variable, "someone-else")
    assert os_user() == ME != "someone-else"


def test_the_tracking_server_user_counts_only_with_an_http_tracking_server(monkeypatch):
    monkeypatch.setenv("USER", "someone-else")
    server = {"MLFLOW_TRACKING_USERNAME": "alice"}
    assert release_identity("https://mlflow.example.com:8443", server) == {
        "actor": "alice",
        "actor_source": "mlflow_server:mlflow.example.com:8443",
    }
    assert release_identity("http://tracking:5000", server)["actor"] == "alice"
    # A local store authenticates nobody: the variable proves nothing there.
    assert release_identity("sqlite:///mlflow.db", server) == {"actor": ME, "actor_source": "os_user"}
    assert release_identity("https://mlflow.example.com", {"MLFLOW_TRACKING_USERNAME": " "}) == {
        "actor": ME,
        "actor_source": "os_user",
    }


# ---------------------------------------------------------------- what a run may not set


@pytest.mark.parametrize(
    ("env", "runtime", "expected"),
    [
        (
            "staging",
            {"promotion": {"require_approval": False}},
            "promotion.require_approval is release policy of env 'staging' and cannot be overridden at run time; "
            "change it in conf/staging/parameters_promotion.yml (reviewed like code)",
        ),
        # Set in base only for staging: the refusal names staging's file of the same name.
        (
            "staging",
            {"promotion": {"forbid_self_approval": False}},
            "promotion.forbid_self_approval is release policy of env 'staging' and cannot be overridden at run time; "
            "change it in conf/staging/parameters_promotion.yml",
        ),
        ("prod", {"promotion": {"forbid_self_approval": False}}, "change it in conf/prod/parameters_promotion.yml"),
        (
            "local",
            {"promotion": {"auto_promote": False}},
            "of env 'local' and cannot be overridden at run time; change it in conf/local/parameters_promotion.yml",
        ),
        # A key inside a protected block, and a block holding protected keys.
        (
            "prod",
            {"evaluation": {"champion_comparison": {"mode": "non_inferiority"}}},
            "evaluation.champion_comparison is release policy of env 'prod' and cannot be overridden at run time; "
            "change it in conf/prod/parameters_evaluation.yml (reviewed like code), not with --params evaluation.champion_comparison.mode",
        ),
        ("prod", {"evaluation": {"floors": {"roc_auc": 0.1}}}, "change it in conf/prod/parameters_evaluation.yml"),
        ("staging", {"promotion": "off"}, "promotion.require_approval is release policy of env 'staging'"),
        (
            "staging",
            {"monitoring": {"actions": {"policy": {"rollback": "execute"}}}},
            "monitoring.actions.policy.rollback is release policy of env 'staging'",
        ),
        ("prod", {"registry": {"aliases": {"champion": "challenger"}}}, "registry is release policy of env 'prod'"),
        # The policy's own definition: no command line empties the list.
        (
            "prod",
            {"governance": {"protected_params": []}},
            "governance.protected_params defines which settings are release policy of env 'prod' and cannot be set at run time; "
            "change it in conf/prod/parameters_governance.yml",
        ),
        ("prod", {"governance": {}}, "governance defines which settings are release policy"),
        # Who releases is not a setting at all.
        (
            "prod",
            {"promotion": {"actor": "someone-else"}},
            "promotion.actor cannot be set (--params promotion.actor): the actor of a release is the identity this process runs as",
        ),
        ("local", {"rollback": {"actor": "someone-else"}}, "rollback.actor cannot be set"),
    ],
)
def test_a_runtime_override_of_release_policy_or_the_actor_is_refused_naming_the_file(env, runtime, expected):
    assert expected in _refusal(env, runtime)


def test_every_offence_of_a_run_is_listed_at_once():
    message = _refusal(
        "prod",
        {
            "promotion": {"require_approval": False, "actor": "x", "reason": "fine"},
            "evaluation": {"floors": {"roc_auc": 0}},
        },
    )
    assert message.startswith("refused before any node ran:")
    assert [line.split(" ")[1] for line in message.splitlines()[1:]] == [
        "promotion.require_approval",
        "promotion.actor",
        "evaluation.floors",
    ]


@pytest.mark.parametrize(
    "runtime",
    [
        {"promotion": {"reason": "monthly release"}},
        {"rollback": {"reason": "conversion dropped"}},
        {"monitoring": {"actions": {"policy": {"retrain": "alert"}}}},
        {"registration": {"register_failed": False}},
        {"ingest": {"full_rebuild": True}, "evaluation": {"serving": {"latency_repeats": 5}}},
        {},
    ],
)
def test_settings_that_are_not_release_policy_stay_overridable(runtime):
    _check("prod", runtime)


def test_a_protected_value_read_from_runtime_params_in_a_file_is_refused(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(PROJECT_ROOT / "conf", conf, ignore=shutil.ignore_patterns("credentials*"))
    promotion = conf / "staging" / "parameters_promotion.yml"
    promotion.write_text(
        promotion.read_text().replace("require_approval: true", "require_approval: ${runtime_params:approve, true}")
    )
    message = _refusal("staging", {"approve": False}, conf)
    assert (
        "promotion.require_approval is release policy of env 'staging' but conf/staging/parameters_promotion.yml reads it from ${runtime_params:"
        in message
    )
    assert "promotion.require_approval" in _refusal("staging", {}, conf)  # the route itself is refused, used or not


# ---------------------------------------------------------------- the recorded policy


def test_the_policy_names_each_setting_its_value_and_the_files_it_came_from():
    policies = {
        env: release_policy(project_config(env)["parameters"], ConfigLayout.of(project_config(env)))
        for env in ("staging", "prod")
    }
    prod, staging = policies["prod"], policies["staging"]
    assert prod["env"] == "prod" and prod["settings"]["promotion.forbid_self_approval"] is True
    assert prod["sources"]["promotion.forbid_self_approval"] == [
        "conf/prod/parameters_promotion.yml",
        "conf/base/parameters_promotion.yml",
    ]
    assert prod["settings"]["evaluation.champion_comparison"] == {
        "mode": "min_improvement",
        "metrics": {"roc_auc": 0.002, "pr_auc": 0.01},
    }
    assert staging["settings"]["promotion.forbid_self_approval"] is False
    assert staging["sources"]["promotion.forbid_self_approval"] == ["conf/base/parameters_promotion.yml"]
    assert (
        staging["settings"]["promotion.require_approval"] is True
        and staging["settings"]["monitoring.actions.policy.rollback"] == "alert"
    )
    assert set(prod["settings"]) == set(project_config("prod")["parameters"]["governance"]["protected_params"])
    # The hash is of what the policy decides, not of where the files were.
    assert policy_sha256(prod) != policy_sha256(staging)
    assert policy_sha256({**prod, "sources": {}}) == policy_sha256(prod)


def test_the_governance_record_has_actor_host_and_policy():
    config = project_config("prod")
    record = release_governance(
        config["parameters"], ConfigLayout.of(config), "sqlite:///mlflow.db", {"USER": "someone-else"}
    )
    assert (record["actor"], record["actor_source"], record["host"]) == (ME, "os_user", socket.gethostname())
    assert record["policy_sha256"] == policy_sha256(record["policy"]) and record["policy"]["env"] == "prod"


# ---------------------------------------------------------------- the hook around a Kedro context


def _context(env: str, runtime: dict):
    return SimpleNamespace(config_loader=project_config(env, runtime), project_path=PROJECT_ROOT)


def test_the_hook_refuses_when_the_context_is_created_and_adds_the_record_to_the_catalog():
    hooks = GovernanceHooks()
    with pytest.raises(PolicyOverrideError, match="conf/staging/parameters_promotion.yml"):
        hooks.after_context_created(_context("staging", {"promotion": {"require_approval": False}}))
    hooks.after_context_created(_context("prod", {"promotion": {"reason": "monthly release"}}))
    catalog = DataCatalog()
    hooks.after_catalog_created(catalog)
    record = catalog.load("release_governance")
    assert (record["actor"], record["policy"]["env"]) == (ME, "prod")
    # Runtime parameters a session hands over only with the run are checked before it starts.
    with pytest.raises(PolicyOverrideError, match="promotion.actor cannot be set"):
        hooks.before_pipeline_run({"runtime_params": {"promotion": {"actor": "someone-else"}}})
    hooks.before_pipeline_run({"runtime_params": {"promotion": {"reason": "x"}}})


# ---------------------------------------------------------------- the audit table


OLD_COLUMNS = AUDIT_COLUMNS[:13]  # ml.model_promotions before release governance


def test_an_existing_audit_table_gains_the_governance_columns(tmp_path):
    path = tmp_path / "ml" / "model_promotions"
    move = [{"alias": "champion", "from_version": None, "to_version": "1"}]
    earlier = record_alias_moves(
        release_event("promote", "m", move), state(version("1", aliases=("champion",))), CONTEXT, GOVERNANCE
    )
    write_deltalake(str(path), earlier[OLD_COLUMNS], mode="append")  # as the table was written before

    table = AuditTableDataset(filepath=str(path))
    table.save(earlier.iloc[:0])
    assert DeltaTable(str(path)).version() == 0  # no rows: no table version
    later = {**GOVERNANCE, "actor": "dave", "host": "release-host"}
    table.save(
        record_alias_moves(
            release_event("promote", "m", move, via="promotion"),
            state(version("1", aliases=("champion",))),
            CONTEXT,
            later,
        )
    )

    rows = PandasDeltaDataset(filepath=str(path)).load()
    assert list(rows.columns) == AUDIT_COLUMNS and len(rows) == 2
    old, new = (rows[rows["actor"] == actor].iloc[0] for actor in ("ci", "dave"))
    assert old[["actor_source", "via", "host", "policy_sha256", "policy"]].isna().all()
    assert (new["actor"], new["host"], new["via"], new["policy_sha256"]) == (
        "dave",
        "release-host",
        "promotion",
        GOVERNANCE["policy_sha256"],
    )
    assert json.loads(new["policy"])["settings"] == GOVERNANCE["policy"]["settings"]
    types = {field.name: str(field.type) for field in DeltaTable(str(path)).schema().fields}
    assert {types[c] for c in ("actor_source", "via", "host", "policy_sha256", "policy")} == {'PrimitiveType("string")'}
