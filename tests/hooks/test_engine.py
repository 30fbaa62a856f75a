"""SparkHooks: the engine's lifecycle around a Kedro run.

The hooks drive the process-wide ``ENGINE``, which the session-wide ``spark`` fixture owns in
this process, so each scenario runs in a child process with a fake minimal context whose
``config_loader`` is a plain dict. The hooks are called through Kedro's own hook manager, with
the arguments Kedro passes, so the hook signatures are checked against Kedro's specs too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

PRELUDE = """
    import json, os, sys
    from types import SimpleNamespace

    from kedro.framework.hooks.manager import _create_hook_manager
    from kedro.io import DataCatalog
    from kedro.pipeline import Pipeline

    from lakehouse_ml.engine import ENGINE, EngineConfig
    from lakehouse_ml.hooks import SparkHooks

    SPARK = {"mode": "embedded", "spark_conf": {"spark.sql.session.timeZone": "Asia/Tokyo"}}
    context = SimpleNamespace(config_loader={"spark": SPARK})
    hooks = SparkHooks()
    manager = _create_hook_manager()
    manager.register(hooks)
    RUN = dict(run_params={}, pipeline=Pipeline([]), catalog=DataCatalog())

    def state():
        return {
            "running": ENGINE.running,
            "remote": os.environ.get("SPARK_REMOTE"),
            "tz": ENGINE.session.conf.get("spark.sql.session.timeZone") if ENGINE.running else None,
            "count": ENGINE.session.range(4).count() if ENGINE.running else None,
        }

    out = {}
"""


def run_scenario(tmp_path: Path, body: str) -> dict:
    """Run PRELUDE + ``body`` in a fresh interpreter (without the fixture's SPARK_REMOTE)."""
    script = tmp_path / "scenario.py"
    script.write_text(textwrap.dedent(PRELUDE) + textwrap.dedent(body) + "\nprint(json.dumps(out))\n")
    env = {k: v for k, v in os.environ.items() if k != "SPARK_REMOTE"}
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"scenario exited with {result.returncode}\n{result.stdout}\n{result.stderr[-4000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def is_local_url(url: str | None) -> bool:
    return bool(url) and url.startswith("sc://127.0.0.1:") and url.rsplit(":", 1)[1].isdigit()


def test_context_created_starts_the_engine_and_the_end_of_the_run_stops_it(tmp_path):
    out = run_scenario(
        tmp_path,
        """
        out["before"] = state()
        manager.hook.after_context_created(context=context)
        out["during"] = state()
        manager.hook.after_pipeline_run(run_result={}, **RUN)
        out["after"] = state()
        """,
    )
    assert out["before"] == {"running": False, "remote": None, "tz": None, "count": None}
    during = out["during"]
    assert during["running"] is True
    assert is_local_url(during["remote"])
    assert during["tz"] == "Asia/Tokyo"  # spark_conf from the config loader was applied
    assert during["count"] == 4
    assert out["after"] == {"running": False, "remote": None, "tz": None, "count": None}


def test_a_failed_run_stops_the_engine_too(tmp_path):
    out = run_scenario(
        tmp_path,
        """
        manager.hook.after_context_created(context=context)
        out["during"] = state()
        manager.hook.on_pipeline_error(error=RuntimeError("node failed"), **RUN)
        out["after"] = state()
        """,
    )
    assert out["during"]["running"] is True
    assert out["after"] == {"running": False, "remote": None, "tz": None, "count": None}


def test_an_engine_started_elsewhere_is_left_running(tmp_path):
    out = run_scenario(
        tmp_path,
        """
        session = ENGINE.start(EngineConfig(spark_conf={"spark.sql.session.timeZone": "UTC"}))
        out["before"] = state()
        manager.hook.after_context_created(context=context)
        out["same_session"] = ENGINE.session is session
        manager.hook.after_pipeline_run(run_result={}, **RUN)
        out["after_run"] = state()
        manager.hook.on_pipeline_error(error=RuntimeError("node failed"), **RUN)
        out["after_error"] = state()
        ENGINE.stop()
        out["stopped_by_owner"] = state()
        """,
    )
    before = out["before"]
    assert before["running"] is True and is_local_url(before["remote"])
    # The hook neither restarted nor reconfigured the running engine...
    assert out["same_session"] is True
    # ...and did not stop it.
    assert out["after_run"] == before
    assert out["after_error"] == before
    assert before["tz"] == "UTC"
    assert out["stopped_by_owner"] == {"running": False, "remote": None, "tz": None, "count": None}


def test_engine_outlives_runs_in_ipython(tmp_path):
    out = run_scenario(
        tmp_path,
        """
        # A stand-in for IPython's module with a live shell (what _interactive() looks at).
        sys.modules["IPython"] = SimpleNamespace(get_ipython=lambda: object())
        manager.hook.after_context_created(context=context)
        manager.hook.after_pipeline_run(run_result={}, **RUN)
        out["after_run"] = state()
        manager.hook.on_pipeline_error(error=RuntimeError("node failed"), **RUN)
        out["after_error"] = state()
        """,
    )
    assert out["after_run"]["running"] is True and out["after_run"]["count"] == 4
    assert out["after_error"]["running"] is True


def test_a_second_run_in_the_same_process_starts_the_engine_again(tmp_path):
    out = run_scenario(
        tmp_path,
        """
        manager.hook.after_context_created(context=context)
        manager.hook.after_pipeline_run(run_result={}, **RUN)
        manager.hook.after_context_created(context=context)
        out["second"] = state()
        manager.hook.after_pipeline_run(run_result={}, **RUN)
        out["after"] = state()
        """,
    )
    assert out["second"]["running"] is True and out["second"]["count"] == 4
    assert out["after"]["running"] is False and out["after"]["remote"] is None


def test_an_invalid_spark_yml_fails_at_context_creation(tmp_path):
    out = run_scenario(
        tmp_path,
        """
        from lakehouse_ml.engine import EngineError
        bad = SimpleNamespace(config_loader={"spark": {"mode": "jvm"}})
        try:
            manager.hook.after_context_created(context=bad)
        except EngineError as error:
            out["error"] = str(error)
        out["state"] = state()
        """,
    )
    assert "mode must be one of embedded, remote, classic, got 'jvm'" in out["error"]
    assert out["state"] == {"running": False, "remote": None, "tz": None, "count": None}


def test_hook_leaves_the_session_fixture_running(spark):
    """In this process: the fixture's engine is 'started elsewhere', so the hook keeps off it."""
    from types import SimpleNamespace

    from lakehouse_ml.engine import ENGINE
    from lakehouse_ml.hooks import SparkHooks

    hooks = SparkHooks()
    hooks.after_context_created(SimpleNamespace(config_loader={"spark": {"mode": "remote"}}))
    hooks.after_pipeline_run()
    hooks.on_pipeline_error()

    assert ENGINE.running and ENGINE.session is spark
    assert spark.range(3).count() == 3
