"""One writing run per lakehouse catalog: a second run is refused naming the first, a killed run
leaves no stale lock, a conflicting commit names the table and what happened."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from kedro.io.core import DatasetError

from lakehouse_ml.datasets import SparkDeltaDataset
from lakehouse_ml.run_lock import LakehouseBusy, RunLock
from tests.helpers import PROJECT_ROOT

HOLDER = {"pipelines": "ingest", "env": "local", "pid": 4242, "host": "box", "started_at": "2026-12-05T01:00:00+00:00"}


def test_a_second_lock_is_refused_naming_the_holder_until_released(tmp_path):
    first, second = RunLock(tmp_path / "dev"), RunLock(tmp_path / "dev")
    first.acquire(HOLDER)
    with pytest.raises(
        LakehouseBusy, match=r"kedro run of ingest \(env local, pid 4242 on box, started 2026-12-05T01:00:00"
    ):
        second.acquire({**HOLDER, "pid": 1})
    assert not second.held
    first.release()
    second.acquire({**HOLDER, "pid": 1})
    assert second.holder()["pid"] == 1
    second.release()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    code = (
        "import sys, time; from lakehouse_ml.run_lock import RunLock; "
        f"RunLock({str(tmp_path)!r}).acquire({{'pid': 7, 'pipelines': 'ingest'}}); print('held', flush=True); time.sleep(120)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(LakehouseBusy, match="pid 7"):
            RunLock(tmp_path).acquire(HOLDER)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    lock = RunLock(tmp_path)
    lock.acquire(HOLDER)  # the kernel released the killed process's lock
    lock.release()


def test_a_lost_commit_race_names_the_table_and_the_cause(tmp_path, spark, monkeypatch):
    table = SparkDeltaDataset(filepath=str(tmp_path / "t"), write_mode="merge", merge_keys=["id"])
    table.save(spark.range(2))

    def lost_race(data):
        raise RuntimeError("Failed to commit transaction: 0")

    monkeypatch.setattr(table, "_merge", lost_race)
    with pytest.raises(
        DatasetError, match=r"t': another writer committed to this table while this run's merge was being committed"
    ):
        table.save(spark.range(3))


@pytest.mark.e2e
@pytest.mark.slow
def test_kedro_run_is_refused_while_another_run_holds_the_lakehouse(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(PROJECT_ROOT / "conf", project / "conf", ignore=shutil.ignore_patterns("credentials*"))
    shutil.copy(PROJECT_ROOT / "pyproject.toml", project)
    (project / "src").mkdir()
    lock = RunLock(project / "data" / "lakehouse" / "dev")
    lock.acquire(HOLDER)
    try:
        env = {**os.environ, "LAKEHOUSE_ML_ROOT": str(project), "KEDRO_DISABLE_TELEMETRY": "1"}
        env.pop("SPARK_REMOTE", None)
        env.pop("LAKEHOUSE_ML_RUN_LOCK", None)
        result = subprocess.run(
            [str(Path(sys.executable).with_name("kedro")), "run", "--pipeline", "ingest"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        lock.release()
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "another run is writing the lakehouse" in output and "pid 4242 on box" in output, output[-3000:]
    assert sorted(p.name for p in (project / "data" / "lakehouse" / "dev").iterdir()) == [
        "_run.lock"
    ]  # nothing written
