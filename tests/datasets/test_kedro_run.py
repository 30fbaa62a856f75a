"""KedroRunDataset: a request runs `kedro run` of the project in a new process; nothing runs without one."""

from __future__ import annotations

import shutil
import sys

import pytest
from kedro.io.core import DatasetError

from lakehouse_ml.datasets import KedroRunDataset
from tests.helpers import PROJECT_ROOT


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A copy of the project's configuration (the package is installed), its own root for MLflow."""
    shutil.copy(PROJECT_ROOT / "pyproject.toml", tmp_path)
    shutil.copytree(PROJECT_ROOT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("credentials*"))
    (tmp_path / "src").mkdir()
    monkeypatch.setenv("LAKEHOUSE_ML_ROOT", str(tmp_path))
    monkeypatch.setenv("KEDRO_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("SPARK_REMOTE", raising=False)
    return tmp_path


def test_the_command_is_this_interpreters_kedro_run_of_the_pipeline_and_environment():
    dataset = KedroRunDataset(pipeline="retrain", env="staging")
    assert dataset.command() == [sys.executable, "-m", "kedro", "run", "--pipelines", "retrain", "--env", "staging"]


def test_no_request_runs_nothing(tmp_path):
    # A project path that is not a project: any process started there would fail.
    KedroRunDataset(pipeline="retrain", env="local", project_path=str(tmp_path)).save({})


@pytest.mark.slow  # a real `kedro run` in a new process
def test_a_failed_run_fails_the_save_with_the_end_of_its_output(project):
    dataset = KedroRunDataset(pipeline="no_such_pipeline", env="local", project_path=str(project))
    with pytest.raises(
        DatasetError,
        match=r"(?s)`kedro run --pipelines no_such_pipeline --env local` failed \(exit 1\).*no_such_pipeline",
    ):
        dataset.save({"reason": "monitoring rule test"})
    with pytest.raises(DatasetError, match="write-only"):
        dataset.load()
