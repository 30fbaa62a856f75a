"""The release vocabulary (alias moves, audit rows, release tags) on hand-made states, and the
registry and audit datasets on a real MLflow store and Delta table."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest
from deltalake import DeltaTable
from kedro.io.core import DatasetError

from lakehouse_ml.datasets import AuditTableDataset, ModelRegistryDataset, ReleaseContextDataset
from lakehouse_ml.release import (
    AUDIT_COLUMNS,
    REGISTERED,
    alias_moves,
    check_model,
    record_alias_moves,
    release_event,
    release_tags,
    version_of_run,
)
from tests.pipelines.registration.releases import (  # noqa: F401 (release_store: fixture)
    CONTEXT,
    GOVERNANCE,
    REGISTRY,
    log_candidate,
    release_store,
    state,
    version,
)

NAME = REGISTRY["model_name"]


def test_alias_moves_point_aliases_at_targets_and_skip_unchanged_ones():
    current = state(
        version("1", aliases=("previous_champion",)),
        version("2", aliases=("champion",)),
        version("3", aliases=("challenger",)),
    )
    actions, moves = alias_moves(
        current, {"previous_champion": "2", "champion": "3", "challenger": None, "other": None}
    )
    assert actions == [
        {"action": "set_alias", "alias": "previous_champion", "version": "2"},
        {"action": "set_alias", "alias": "champion", "version": "3"},
        {"action": "delete_alias", "alias": "challenger"},
    ]
    assert moves == [
        {"alias": "previous_champion", "from_version": "1", "to_version": "2"},
        {"alias": "champion", "from_version": "2", "to_version": "3"},
        {"alias": "challenger", "from_version": "3", "to_version": None},
    ]
    assert alias_moves(current, {"champion": "2"}) == ([], [])


def test_version_of_run_finds_a_version_by_its_run_or_run_id_tag():
    tagged_only = version("2", run_id="r2")
    tagged_only["run_id"] = None  # a version registered from a models:/ URI without a run
    current = state(version("1", run_id="r1"), tagged_only)
    assert version_of_run(current, "r1")["version"] == "1"
    assert version_of_run(current, "r2")["version"] == "2"
    assert version_of_run(current, "r3") is None


def test_check_model_refuses_a_catalog_entry_of_another_model():
    assert check_model(state(), REGISTRY) == NAME
    with pytest.raises(
        ValueError, match="registry entry is model 'prod.ml.churn_classifier' but params:registry names 'dev"
    ):
        check_model(state(name="prod.ml.churn_classifier"), REGISTRY)


def test_audit_rows_resolve_the_registered_version_and_name_who_when_why_where_and_under_which_policy():
    event = release_event(
        "register_challenger",
        NAME,
        [{"alias": "challenger", "from_version": "1", "to_version": REGISTERED}],
        reason="passed",
        gate_report="runs:/e/reports/gates.json",
        via="registration",
    )
    frame = record_alias_moves(event, state(version("1"), version("2", aliases=("challenger",))), CONTEXT, GOVERNANCE)
    assert list(frame.columns) == AUDIT_COLUMNS and len(frame) == 1
    row = frame.iloc[0].to_dict()
    assert {
        k: row[k]
        for k in (
            "action",
            "alias",
            "from_version",
            "to_version",
            "actor",
            "reason",
            "gate_report",
            "catalog",
            "kedro_run_id",
        )
    } == {
        "action": "register_challenger",
        "alias": "challenger",
        "from_version": "1",
        "to_version": "2",
        "actor": "ci",
        "reason": "passed",
        "gate_report": "runs:/e/reports/gates.json",
        "catalog": "dev",
        "kedro_run_id": "k1",
    }
    assert {k: row[k] for k in ("actor_source", "via", "host", "policy_sha256")} == {
        "actor_source": "os_user",
        "via": "registration",
        "host": "build-01",
        "policy_sha256": "0123456789abcdef",
    }
    assert json.loads(row["policy"]) == GOVERNANCE["policy"]
    assert row["event_ts"] == pd.Timestamp(CONTEXT["at"]) and pd.isna(row["approved_by"])
    # Deterministic ids: the same event at the same time is the same row.
    again = record_alias_moves(event, state(version("2", aliases=("challenger",))), CONTEXT, GOVERNANCE)
    assert frame["event_id"].tolist() == again["event_id"].tolist()


def test_audit_rows_take_the_actor_from_the_governance_record_and_record_removed_aliases():
    event = release_event(
        "promote", NAME, [{"alias": "challenger", "from_version": "2", "to_version": None}], approved_by="bob"
    )
    row = record_alias_moves(
        event, state(version("2", aliases=("champion",))), CONTEXT, {**GOVERNANCE, "actor": "alice"}
    ).iloc[0]
    assert (row["actor"], row["approved_by"], row["from_version"]) == ("alice", "bob", "2") and pd.isna(
        row["to_version"]
    )


def test_release_tags_name_who_where_how_and_the_policy_of_a_step():
    tags = release_tags("promotion", GOVERNANCE, "promotion")
    assert {k: v for k, v in tags.items() if k != "promotion.policy"} == {
        "promotion.actor": "ci",
        "promotion.actor_source": "os_user",
        "promotion.host": "build-01",
        "promotion.via": "promotion",
        "promotion.policy_sha256": "0123456789abcdef",
    }
    assert json.loads(tags["promotion.policy"]) == {"env": "local", "promotion.require_approval": False}


def test_audit_rows_refuse_a_registry_that_did_not_end_where_planned():
    event = release_event("promote", NAME, [{"alias": "champion", "from_version": None, "to_version": "2"}])
    with pytest.raises(RuntimeError, match="champion is at version 3 after the release, expected 2"):
        record_alias_moves(event, state(version("3", aliases=("champion",))), CONTEXT, GOVERNANCE)


def test_no_moves_make_an_empty_frame_of_the_audit_schema():
    frame = record_alias_moves(release_event("register_challenger", NAME, []), state(), CONTEXT, GOVERNANCE)
    assert frame.empty and list(frame.columns) == AUDIT_COLUMNS
    assert str(frame["event_ts"].dtype) == "datetime64[us, UTC]" and str(frame["alias"].dtype) == "string"


# ------------------------------------------------------------------------- datasets, real store


@pytest.mark.usefixtures("release_store")
def test_registry_dataset_loads_an_unknown_model_as_empty():
    assert ModelRegistryDataset(model_name=NAME).load() == state()


@pytest.mark.usefixtures("release_store")
def test_registry_dataset_applies_actions_in_order(tmp_path):
    run_id = log_candidate(tmp_path)
    registry = ModelRegistryDataset(model_name=NAME)
    registry.save(
        [
            {
                "action": "register",
                "model_uri": f"runs:/{run_id}/model",
                "description": "first",
                "tags": {"run_id": run_id},
            },
            {"action": "set_alias", "alias": "challenger", "version": REGISTERED},
            {"action": "set_version_tag", "version": REGISTERED, "key": "approved_by", "value": "bob"},
        ]
    )
    registry.save(
        [
            {"action": "register", "model_uri": f"runs:/{run_id}/model", "description": "second", "tags": {}},
            {"action": "set_alias", "alias": "champion", "version": "1"},
            {"action": "delete_alias", "alias": "challenger"},
        ]
    )
    loaded = registry.load()
    assert loaded["exists"] and loaded["aliases"] == {"champion": "1"}
    first, second = loaded["versions"]["1"], loaded["versions"]["2"]
    assert (first["run_id"], first["description"], first["status"], first["aliases"]) == (
        run_id,
        "first",
        "READY",
        ["champion"],
    )
    assert first["tags"] == {"run_id": run_id, "approved_by": "bob"}
    assert (second["description"], second["aliases"]) == ("second", [])


@pytest.mark.usefixtures("release_store")
def test_registry_dataset_refuses_unknown_actions_and_a_dangling_registered_version():
    registry = ModelRegistryDataset(model_name=NAME)
    with pytest.raises(DatasetError, match="no 'register' action came first"):
        registry.save([{"action": "set_alias", "alias": "challenger", "version": REGISTERED}])
    with pytest.raises(DatasetError, match="unknown registry action 'transition_stage'"):
        registry.save([{"action": "transition_stage", "version": "1"}])


@pytest.mark.usefixtures("release_store")
def test_release_context_names_the_time_catalog_and_run():
    context = ReleaseContextDataset(catalog="staging").load()
    assert context["catalog"] == "staging" and context["kedro_run_id"] is None
    assert context["at"].tzinfo is not None
    with mlflow.start_run() as run:
        assert ReleaseContextDataset(catalog="dev").load()["kedro_run_id"] == run.info.run_id


def test_audit_table_appends_rows_and_writes_nothing_for_none(tmp_path):
    path = tmp_path / "ml" / "model_promotions"
    table = AuditTableDataset(filepath=str(path))
    event = release_event("promote", NAME, [{"alias": "champion", "from_version": None, "to_version": "1"}])
    table.save(record_alias_moves(release_event("promote", NAME, []), state(), CONTEXT, GOVERNANCE))
    assert not DeltaTable.is_deltatable(str(path))
    for _ in range(2):
        table.save(record_alias_moves(event, state(version("1", aliases=("champion",))), CONTEXT, GOVERNANCE))
    assert len(table.load()) == 2 and DeltaTable(str(path)).version() == 1
