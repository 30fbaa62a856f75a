"""A study in the team's PostgreSQL: resumed by another process as if never interrupted, shared by
parallel processes up to exactly ``n_trials``, and a clear, quick error when the server is not there.

"Another machine" is another process: it shares nothing with the test but the database. Run as
``python -m tests.pipelines.tuning.test_shared_study <study> <n_trials>`` it tunes that study in
the storage ``OPTUNA_TEST_URL`` with the login ``OPTUNA_TEST_USER`` / ``OPTUNA_TEST_PASSWORD``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from lakehouse_ml.datasets import OptunaStorageDataset
from lakehouse_ml.datasets.optuna_storage import OptunaStorageError
from lakehouse_ml.pipelines.tuning.nodes import run_study
from tests.pipelines.tuning.test_nodes import SEARCH_SPACE, _folds, _synthetic, _tuning, stored_trials

ROOT = Path(__file__).resolve().parents[3]
PRUNER = {"pruner": {"n_startup_trials": 2}}
N_JOBS = 2


def _server_url(url: str) -> str:
    """The fixture's URL without its login (the login goes through credentials)."""
    return url.replace("lakehouse:lakehouse-pg-secret@", "")


def _study(storage, name: str, n_trials: int) -> dict:
    frame = _synthetic()
    return run_study(
        frame, _folds(frame), SEARCH_SPACE, {**_tuning(name, n_trials, N_JOBS), **PRUNER}, None, storage=storage
    )


def _process(postgres, database: str, name: str, n_trials: int) -> subprocess.Popen:
    """Another machine tuning study ``name`` in ``database``; the password only in its environment."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        "OPTUNA_TEST_URL": _server_url(postgres.url(database)),
        "OPTUNA_TEST_USER": postgres.user,
        "OPTUNA_TEST_PASSWORD": postgres.password,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.pipelines.tuning.test_shared_study", name, str(n_trials)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process: subprocess.Popen) -> None:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]


def _load(postgres, database: str, password: str | None = None) -> optuna.storages.RDBStorage:
    credentials = {"username": postgres.user, "password": password or postgres.password}
    return OptunaStorageDataset(url=_server_url(postgres.url(database)), credentials=credentials).load()


@pytest.mark.services
def test_a_study_interrupted_here_and_continued_elsewhere_matches_an_uninterrupted_one(postgres):
    """4 of 8 trials here, the other 4 by another process: the same trials (numbers, params,
    values, fold reports, pruning) as 8 in one go on a fresh database with the same seed and n_jobs."""
    whole = _load(postgres, "optuna_whole")
    _study(whole, "churn", 8)
    resumed = _load(postgres, "optuna_resumed")
    first = _study(resumed, "churn", 4)
    assert first["n_trials"] == 4
    _finish(_process(postgres, "optuna_resumed", "churn", 8))
    expected = stored_trials(postgres.url("optuna_whole"), "churn")
    assert stored_trials(postgres.url("optuna_resumed"), "churn") == expected and len(expected) == 8
    assert {state for _, state, *_ in expected} == {"COMPLETE", "PRUNED"}


@pytest.mark.services
def test_parallel_processes_on_one_study_finish_exactly_its_trials(postgres):
    """Two machines on one 12-trial study at once: 12 finished trials in all, numbers unique, none
    RUNNING; a trial past the budget (both asked for the last slot) is FAIL, tagged over_budget."""
    _load(postgres, "optuna_parallel")  # Optuna's tables exist before both processes race to create them
    processes = [_process(postgres, "optuna_parallel", "shared", 12) for _ in range(2)]
    for process in processes:
        _finish(process)
    trials = optuna.load_study(study_name="shared", storage=postgres.url("optuna_parallel")).trials
    states = [t.state.name for t in trials]
    assert sum(state in ("COMPLETE", "PRUNED") for state in states) == 12
    assert "RUNNING" not in states and len({t.number for t in trials}) == len(trials)
    assert all(t.user_attrs.get("over_budget") for t in trials if t.state.name == "FAIL")


@pytest.mark.services
def test_a_wrong_password_names_the_credentials_entry_quickly(postgres):
    started = time.monotonic()
    with pytest.raises(OptunaStorageError) as raised:
        _load(postgres, "optuna_login", password="not-the-password")
    message = str(raised.value)
    assert time.monotonic() - started < 10
    assert message.startswith(
        f"Optuna study storage postgresql+psycopg://127.0.0.1:{postgres.port}/optuna_login refused the login"
    )
    assert "credentials entry `optuna_storage`" in message and "conf/<env>/credentials.yml" in message
    assert "not-the-password" not in message and postgres.password not in message


@pytest.mark.services
def test_a_server_that_is_down_names_the_url_setting_quickly(postgres):
    from tests.services.servers import free_port

    port = free_port()  # nothing listens there: a server that is down
    started = time.monotonic()
    with pytest.raises(OptunaStorageError) as raised:
        OptunaStorageDataset(
            url=f"postgresql+psycopg://127.0.0.1:{port}/optuna",
            credentials={"username": postgres.user, "password": postgres.password},
        ).load()
    message = str(raised.value)
    assert time.monotonic() - started < 10
    assert message.startswith(f"Optuna study storage postgresql+psycopg://127.0.0.1:{port}/optuna did not answer")
    assert "catalog entry `optuna_storage`'s `url`" in message and postgres.password not in message


if __name__ == "__main__":
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    login = {"username": os.environ["OPTUNA_TEST_USER"], "password": os.environ["OPTUNA_TEST_PASSWORD"]}
    storage = OptunaStorageDataset(url=os.environ["OPTUNA_TEST_URL"], credentials=login).load()
    _study(storage, sys.argv[1], int(sys.argv[2]))
