"""The layer contracts of pyproject.toml ([tool.importlinter]) hold, so `pytest` alone catches a
violation; and the scoring service, imported, has loaded none of what it must not need."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import PROJECT_ROOT

pytest.importorskip("importlinter")


def test_import_contracts_are_kept():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    command = [str(lint_imports)] if lint_imports.exists() else ["lint-imports"]
    result = subprocess.run([*command, "--no-cache"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_scoring_service_imports_without_kedro_settings_engine_spark_or_plugins():
    # At run time, not only in the static graph: a package's __init__ runs on any submodule import.
    code = textwrap.dedent("""
        import sys
        import lakehouse_ml.serving.app
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("pyspark", "pysail", "kedro_datasets", "kedro_mlflow")
                     or m in ("lakehouse_ml.settings", "lakehouse_ml.engine") or m.startswith("lakehouse_ml.hooks")
                     or m.startswith("lakehouse_ml.pipelines")))
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_scoring_service_listens_before_it_imports_scikit_learn_or_mlflow():
    # Everything the process does before uvicorn binds, from the command's main() through the app's
    # lifespan startup: what the releases need loads on their thread (here: not at all).
    code = textwrap.dedent("""
        import asyncio
        import sys

        import uvicorn

        from lakehouse_ml.serving.scoring import ScoringService

        ScoringService.load = lambda self: None

        async def started(app):
            async with app.router.lifespan_context(app):  # the startup uvicorn runs before it binds
                print(sorted({m.split(".")[0] for m in sys.modules} & {"sklearn", "scipy", "mlflow", "sqlalchemy"}))

        def run(app, **options):
            asyncio.run(started(app))

        uvicorn.run = run
        from lakehouse_ml.serving.__main__ import main

        sys.exit(main(["--env", "local"]))
    """)
    env = {**os.environ, "LAKEHOUSE_ML_SERVING_TOKEN": "layers-test"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
