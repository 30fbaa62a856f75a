"""Kedro's settings: importing them sets nothing up; the loader and a hook do, when a session makes them."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.helpers import PROJECT_ROOT


def _run(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_importing_the_settings_changes_no_warning_filter_nor_optuna_logging():
    assert (
        _run("""
        import warnings
        import optuna
        before = list(warnings.filters)
        logger = optuna.logging.get_logger("optuna")
        handlers, propagate = list(logger.handlers), logger.propagate
        import lakehouse_ml.settings
        ours = [f for f in warnings.filters if f not in before and "register_new_resolver" in str(f[1])]
        print(ours == [] and logger.handlers == handlers and logger.propagate == propagate)
    """)
        == "True"
    )


def test_the_hook_routes_optuna_through_logging_and_the_loader_quiets_kedros_own_deprecation():
    assert (
        _run("""
        import warnings
        import optuna
        from lakehouse_ml.configuration import CONFIG_LOADER_ARGS, ProjectConfigLoader
        from lakehouse_ml.hooks import LoggingHooks

        LoggingHooks().after_context_created()
        logger = optuna.logging.get_logger("optuna")
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            loader = ProjectConfigLoader(conf_source="conf", **CONFIG_LOADER_ARGS)
            loader["parameters"]
        print(logger.propagate, logger.handlers == [], [str(w.message) for w in seen if "register_new_resolver" in str(w.message)])
    """)
        == "True True []"
    )
