"""The engine tests and the whole default loop against the local Spark cluster (JVM Spark + Delta).

The `spark` fixture of one pytest process is one engine, so each test file runs in a child pytest
whose `spark` fixture points at the cluster (``LAKEHOUSE_TEST_SPARK_REMOTE``); the cluster itself
is started once per test run by the `spark_cluster` fixture.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from lakehouse_ml.datasets import PandasDeltaDataset
from tests.conftest import PROJECT_ROOT, REMOTE_ENV
from tests.test_cli import SMALL_LOOP, kedro

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

# Delta datasets (overwrite, append, MERGE, replace, time travel, crash safety), the engine
# differences, the point-in-time oracle and the tuning executors, each on the cluster.
ENGINE_TEST_FILES = [
    "tests/test_capabilities.py",
    "tests/datasets/test_delta.py",
    "tests/features/test_lookup.py",
    "tests/pipelines/tuning/test_executors.py",
]


def run_on_cluster(url: str, test_file: str) -> subprocess.CompletedProcess:
    """Run one test file in a child pytest against the Spark Connect server at ``url``."""
    env = {k: v for k, v in os.environ.items() if k != "SPARK_REMOTE"}
    env[REMOTE_ENV] = url
    return subprocess.run(
        [sys.executable, "-m", "pytest", test_file, "-q", "-p", "no:cacheprovider", "--tb=short"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("test_file", ENGINE_TEST_FILES)
def test_file_passes_on_the_cluster(spark_cluster, test_file):
    result = run_on_cluster(spark_cluster, test_file)
    assert result.returncode == 0, f"{test_file} on {spark_cluster}:\n{result.stdout[-6000:]}"


# ------------------------------------------------------------------------- the whole loop


def tables(root: Path) -> dict[str, int]:
    """Row count of every Delta table under a catalog's folder, by ``schema/table``."""
    return {
        str(path.relative_to(root)): len(PandasDeltaDataset(filepath=str(path)).load())
        for path in sorted(root.glob("*/*"))
        if (path / "_delta_log").is_dir()
    }


def ordered(frame: pd.DataFrame, keys: list[str], drop: tuple[str, ...] = ()) -> pd.DataFrame:
    """``frame`` without the run-specific columns, sorted by ``keys``, columns by name."""
    frame = frame.drop(columns=[c for c in drop if c in frame.columns])
    return frame.sort_values(keys).reset_index(drop=True)[sorted(frame.columns)]


@pytest.fixture(scope="module")
def two_runs(spark_cluster, tmp_path_factory) -> Path:
    """The small default loop run twice in one project copy: embedded (dev) and on the cluster."""
    copy = tmp_path_factory.mktemp("cluster_project")
    shutil.copy(PROJECT_ROOT / "pyproject.toml", copy)
    shutil.copytree(PROJECT_ROOT / "conf", copy / "conf", ignore=shutil.ignore_patterns("credentials*"))
    (copy / "src").mkdir()
    (copy / "data").mkdir()
    for env in ("local", "cluster"):
        (copy / "conf" / env / "parameters_small_loop.yml").write_text(SMALL_LOOP)
    spark_yml = copy / "conf" / "cluster" / "spark.yml"
    config = yaml.safe_load(spark_yml.read_text())
    config["remote"]["url"] = spark_cluster
    spark_yml.write_text(yaml.safe_dump(config))
    embedded = kedro(copy, "run", timeout=900)
    assert embedded.returncode == 0, embedded.stdout[-3000:] + embedded.stderr[-3000:]
    clustered = kedro(copy, "run", "--env", "cluster", timeout=2400)
    assert clustered.returncode == 0, clustered.stdout[-3000:] + clustered.stderr[-6000:]
    assert "Spark engine 'remote' ready" in clustered.stdout + clustered.stderr
    assert "tuning: trials are fitted as Spark tasks" in clustered.stdout + clustered.stderr
    return copy


@pytest.mark.timeout(3600)
def test_the_default_loop_on_the_cluster_writes_what_the_embedded_engine_writes(two_runs):
    lakehouse = two_runs / "data" / "lakehouse"
    embedded, clustered = tables(lakehouse / "dev"), tables(lakehouse / "cluster")
    assert clustered == embedded
    assert embedded["ml/training_set"] > 0 and embedded["ml/churn_predictions"] > 0


@pytest.mark.timeout(3600)
def test_the_training_set_and_the_predictions_are_equal_row_for_row(two_runs):
    lakehouse = two_runs / "data" / "lakehouse"

    def load(catalog: str, table: str) -> pd.DataFrame:
        return PandasDeltaDataset(filepath=str(lakehouse / catalog / table)).load()

    keys = ["customer_id", "cutoff_ts"]
    pd.testing.assert_frame_equal(
        ordered(load("cluster", "ml/training_set"), keys),
        ordered(load("dev", "ml/training_set"), keys),
        check_exact=False,
        rtol=1e-9,
    )
    # Which run, registered model and time scored them differ by design; what was scored must not.
    run_specific = ("scored_at", "model_name", "model_run_id")
    keys = ["customer_id", "scoring_date"]
    pd.testing.assert_frame_equal(
        ordered(load("cluster", "ml/churn_predictions"), keys, run_specific),
        ordered(load("dev", "ml/churn_predictions"), keys, run_specific),
        check_exact=False,
        rtol=1e-9,
    )


@pytest.mark.timeout(3600)
def test_the_models_metrics_are_equal(two_runs):
    import json

    def metrics(catalog: str) -> dict[str, float]:
        candidate = json.loads((two_runs / "data" / "06_models" / catalog / "candidate.json").read_text())
        return candidate["test_metrics"]

    embedded, clustered = metrics("dev"), metrics("cluster")
    assert clustered.keys() == embedded.keys()
    assert np.allclose([clustered[k] for k in embedded], list(embedded.values()), rtol=1e-9, atol=1e-12)
    studies = [
        json.loads((two_runs / "data" / "06_models" / catalog / "tuning_study_result.json").read_text())["trials"]
        for catalog in ("dev", "cluster")
    ]
    assert [(t["number"], t["state"], t["value"]) for t in studies[1]] == [
        (t["number"], t["state"], t["value"]) for t in studies[0]
    ]
