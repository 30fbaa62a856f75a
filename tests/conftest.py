"""Shared fixtures: one embedded Spark engine for the whole test session (the users' engine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lakehouse_ml.engine import ENGINE, EngineConfig

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def spark():
    """The embedded pysail engine, exactly as ``kedro run`` starts it by default."""
    session = ENGINE.start(EngineConfig(spark_conf={"spark.sql.session.timeZone": "UTC"}))
    yield session
    ENGINE.stop()
