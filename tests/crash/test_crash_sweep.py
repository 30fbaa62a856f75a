"""Crash consistency: a real `kedro run --pipelines ingest,features` killed after each Delta commit
in turn and run again leaves every table as a run that was never interrupted (see harness.py)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.crash.harness import check, differences, kedro, make_project, sweep, tables
from tests.test_cli import SMALL_LOOP

# A sweep runs the CLI twice per commit point (minutes, not the suite's 10-minute default per test).
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]

SMALL = "simulate: {n_customers: 120, n_days: 40}\ningest: {quarantine_gate: {max_rate: 0.5, min_rows: 50}}\n"


def late_delivery(project: Path) -> None:
    """A new orders delivery the day after the last one: the last day's orders re-sent with new
    event ids (late events of earlier days), plus a correction that moves an order to another day;
    and a profile change, so both feature tables are written (a crash can fall between them)."""
    landing = project / "data" / "01_raw" / "landing" / "dev" / "orders"
    folders = sorted(p for p in landing.iterdir() if p.is_dir())
    last, first = folders[-1], folders[0]
    day = last.name[:-2] + f"{int(last.name[-2:]) + 1:02d}"
    records = [json.loads(line) for line in next(last.glob("*.jsonl")).read_text().splitlines() if line.strip()]
    resent = [
        {**r, "event_id": f"{r['event_id']}-late", "delivered_at": f"{day}T02:05:00Z"}
        for r in records
        if isinstance(r, dict) and r.get("event_id")
    ]
    corrected = json.loads(next(first.glob("*.jsonl")).read_text().splitlines()[0])
    corrected.update({"event_ts": f"{last.name}T01:00:00Z", "delivered_at": f"{day}T02:05:00Z"})
    (landing / day).mkdir()
    (landing / day / "orders.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*resent, corrected]))
    profiles = landing.parent / "customers"
    with next(sorted(p for p in profiles.iterdir() if p.is_dir())[-1].glob("*.csv")).open(newline="") as delivered:
        change = next(row for row in csv.DictReader(delivered) if all(row.values()))
    change.update(
        {
            "event_id": f"{change['event_id']}-upgrade",
            "event_ts": f"{last.name}T01:00:00Z",
            "delivered_at": f"{day}T02:05:00Z",
            "plan_tier": "premium",
            "monthly_price": "34.99",
        }
    )
    (profiles / day).mkdir(exist_ok=True)
    with (profiles / day / "customers.csv").open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(change), lineterminator="\n")
        writer.writeheader()
        writer.writerow(change)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    project = make_project(tmp_path_factory.mktemp("crash") / "base", SMALL)
    check(kedro(project, ["run", "--pipelines", "simulate,ingest,features"]), "base run")
    late_delivery(project)
    return project


def test_ingest_and_features_killed_after_any_commit_recover_exactly(base, tmp_path):
    report = sweep(base, [["run", "--pipelines", "ingest,features"]], tmp_path)
    commits = report["commits"]
    # The sweep must cover the commits that lost rows before: silver (its append of new events and
    # its MERGE of corrections), the audit, gold, a feature MERGE, and the point between two
    # tables' MERGEs of one save.
    merges = ("feature_tables@spark[customer_activity]", "feature_tables@spark[customer_profile]")
    silver = ("orders_silver@spark[append]", "orders_silver@spark")
    for table in (*silver, "orders.ingest_audit", "customer_daily_activity@spark", *merges):
        assert table in commits, commits
    assert report["failures"] == {}, json.dumps(report["failures"], indent=2)
    # And the incremental refresh of the late delivery equals a full recomputation (issue: 268 rows
    # of 37 customers were only in the full result).
    clean = report["clean"]
    incremental = tables(clean)
    check(kedro(clean, ["run", "--pipeline", "features", "--params", "features.full_rebuild=true"]), "full rebuild")
    rebuilt = tables(clean)
    for table in ("features/customer_activity", "features/customer_profile"):
        assert len(incremental[table]) > 0
        assert differences({table: incremental[table]}, {table: rebuilt[table]}) == []


@pytest.fixture(scope="module")
def loop(tmp_path_factory) -> Path:
    """The whole default loop on a small business, then the late delivery ingested and featurised."""
    project = make_project(tmp_path_factory.mktemp("loop") / "base", SMALL_LOOP)
    check(kedro(project, ["run"]), "default run")
    late_delivery(project)
    check(kedro(project, ["run", "--pipelines", "ingest,features"]), "ingest,features")
    return project


def test_training_set_inference_and_monitoring_killed_after_any_commit_recover_exactly(loop, tmp_path):
    """Each stage swept from the clean result of the one before, registry included."""
    base, failures = loop, {}
    # Monitoring's sweep also kills the retrain run it starts, inside its registry calls.
    for stage in ("training_set", "inference", "monitoring"):
        report = sweep(base, [["run", "--pipeline", stage]], tmp_path / stage)
        assert report["commits"], f"{stage} committed nothing: the sweep would prove nothing"
        failures.update({f"{stage} {point}": problems for point, problems in report["failures"].items()})
        base = report["clean"]
    assert failures == {}, json.dumps(failures, indent=2)
