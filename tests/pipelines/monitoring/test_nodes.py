"""Monitoring nodes hand their datasets and parameters to the library (``lakehouse_ml.monitoring``,
whose tests cover the logic): here, that the parameters reach it."""

from __future__ import annotations

import pytest

from lakehouse_ml.pipelines.monitoring.nodes import collect_served_rows
from tests.monitoring.test_served import LOG, PREDICTIONS

MONITORING = {"window_days": 1, "lookback_windows": 30, "sources": ["batch", "online"]}


def test_the_sources_come_from_the_monitoring_parameters(spark):
    empty_predictions, empty_log = spark.createDataFrame([], PREDICTIONS), spark.createDataFrame([], LOG)
    with pytest.raises(ValueError, match=r"unknown source\(s\) \['kafka'\]"):
        collect_served_rows(empty_predictions, empty_log, {**MONITORING, "sources": ["batch", "kafka"]})
