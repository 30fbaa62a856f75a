"""Registration nodes: plan the evaluated candidate's registration from the registry's state.

The candidate becomes a new version of ``params:registry.model_name`` with a description and
lineage tags; only a candidate whose gates report passed gets the ``challenger`` alias. A failed
one is registered with ``validation_status=failed`` and no alias (or not at all with
``registration.register_failed: false``). A run already registered is not registered again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from lakehouse_ml.release import REGISTERED, alias_moves, check_model, release_event, release_tags, version_of_run
from lakehouse_ml.tracking import PARENT_TAG, table_name_from_path

logger = logging.getLogger(__name__)

MODEL_URI_TAG = "candidate_model_uri"  # set on the candidate run by MlflowSignedModelDataset


def _day(timestamp: str) -> str:
    return str(timestamp)[:10]


def candidate_fingerprint(candidate: dict[str, Any], candidate_run: dict[str, Any]) -> str:
    """A hash of what determines the model: training-set table and version, family, hyperparameters,
    seed, features and split. A re-run of the loop on unchanged data refits the same model in a new
    run; the fingerprint lets registration see that it is already released."""
    provenance = candidate_run["provenance"]
    basis = {
        "training_set": {k: candidate["training_set"][k] for k in ("path", "version")},
        **{k: provenance.get(k) for k in ("model", "features", "split")},
    }
    return hashlib.sha256(json.dumps(basis, sort_keys=True, default=str).encode()).hexdigest()[:16]


def lineage_tags(candidate: dict[str, Any], candidate_run: dict[str, Any], report: dict[str, Any]) -> dict[str, str]:
    """The version's lineage tags: runs, code, training set, feature contracts, verdict, threshold, report."""
    training_set = candidate["training_set"]
    sources = (candidate_run["provenance"].get("training_set") or {}).get("spec", {}).get("sources", {})
    tags = {
        "run_id": candidate["run_id"],
        "parent_run_id": candidate_run["tags"].get(PARENT_TAG) or "none",
        "git_sha": candidate.get("git_sha") or "unknown",
        "training_set_table": table_name_from_path(training_set["path"]) or training_set["path"],
        "training_set_version": str(training_set["version"]),
        **{
            f"contract_hash.{table}": source.get("contract_hash") or "none" for table, source in sorted(sources.items())
        },
        "validation_status": "passed" if report["passed"] else "failed",
        "operating_threshold": str(float(candidate["operating_threshold"]["threshold"])),
        "fingerprint": candidate_fingerprint(candidate, candidate_run),
    }
    if report.get("report_uri"):
        tags["gates_report"] = report["report_uri"]
    return tags


def describe_version(candidate: dict[str, Any], report: dict[str, Any], registration: dict[str, Any]) -> str:
    """The version's description (Markdown): windows, training set, threshold, gates, intended use, limitations."""
    train, test = candidate["split"]["train_cutoffs"], candidate["split"]["test_cutoffs"]
    facts = {
        "n_train_cutoffs": len(train),
        "train_start": _day(train[0]),
        "train_end": _day(train[-1]),
        "test_start": _day(test[0]),
        "test_end": _day(test[-1]),
    }
    threshold = candidate["operating_threshold"]
    training_set = candidate["training_set"]
    return "\n".join(
        [
            f"Churn classifier from candidate run `{candidate['run_id']}` (git `{candidate.get('git_sha') or 'unknown'}`).",
            "",
            f"- Training window: {len(train)} cutoffs, {facts['train_start']} to {facts['train_end']}",
            f"- Test window: {len(test)} cutoffs, {facts['test_start']} to {facts['test_end']}",
            f"- Training set: `{table_name_from_path(training_set['path']) or training_set['path']}` version {training_set['version']}",
            f"- Operating threshold: {float(threshold['threshold']):.4f} ({threshold.get('strategy', 'unknown strategy')})",
            f"- Gates: {report['summary']}",
            "",
            f"**Intended use.** {registration['intended_use'].strip()}",
            "",
            "**Limitations.**",
            *(f"- {text.format(**facts)}" for text in registration["limitations"]),
        ]
    )


def plan_registration(
    candidate: dict[str, Any],
    candidate_run: dict[str, Any],
    report: dict[str, Any],
    registry_state: dict[str, Any],
    registry: dict[str, Any],
    registration: dict[str, Any],
    governance: dict[str, Any],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Registry actions and release event for the evaluated candidate (idempotent on its run id); the
    new version is tagged with who registered it, from where and under which policy."""
    name = check_model(registry_state, registry)
    run_id = candidate["run_id"]
    for what, other in (
        ("the gates report", report["candidate"]["run_id"]),
        ("the candidate run record", candidate_run["run_id"]),
    ):
        if other != run_id:
            raise ValueError(
                f"{what} is for candidate run {other} but candidate.json names run {run_id}: evaluate this "
                "candidate first (kedro run --pipeline evaluation), then register it"
            )
    fingerprint = candidate_fingerprint(candidate, candidate_run)
    existing = version_of_run(registry_state, run_id)
    same = existing or next(
        (v for v in registry_state["versions"].values() if v["tags"].get("fingerprint") == fingerprint), None
    )
    if same is not None:
        logger.info(
            "registration: candidate run %s is already %s version %s (%s; validation_status=%s, aliases: %s): "
            "nothing registered, registration is idempotent on the run id and on the model's fingerprint",
            run_id,
            name,
            same["version"],
            "same run" if existing else f"same fingerprint {fingerprint}",
            same["tags"].get("validation_status"),
            same["aliases"] or "none",
        )
        return [], release_event("register_challenger", name, [], via="registration")
    if not report["passed"] and not registration["register_failed"]:
        logger.warning(
            "registration: candidate run %s failed the gates (%s) and registration.register_failed is false: not registered",
            run_id,
            report["summary"],
        )
        return [], release_event("register_challenger", name, [], via="registration")
    register = {
        # The logged model's own URI when the run names it (what MLflow 3 resolves runs:/ URIs to).
        "action": "register",
        "model_uri": candidate_run["tags"].get(MODEL_URI_TAG) or candidate["model_uri"],
        "run_id": run_id,
        "description": describe_version(candidate, report, registration),
        "tags": {
            **lineage_tags(candidate, candidate_run, report),
            **release_tags("registration", governance, "registration"),
        },
    }
    challenger = registry["aliases"]["challenger"]
    actions, moves = alias_moves(registry_state, {challenger: REGISTERED} if report["passed"] else {})
    (logger.info if report["passed"] else logger.warning)(
        "registration: candidate run %s becomes a new version of %s (%s): %s",
        run_id,
        name,
        report["summary"],
        f"alias '{challenger}'" if report["passed"] else "validation_status=failed, no alias",
    )
    event = release_event(
        "register_challenger",
        name,
        moves,
        reason=f"candidate run {run_id}: {report['summary']}",
        gate_report=report.get("report_uri"),
        via="registration",
    )
    return [register, *actions], event
