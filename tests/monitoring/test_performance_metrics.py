"""The performance_metrics table's status: ROC AUC against the version's reference minus the allowed drop."""

from __future__ import annotations

import pytest

from lakehouse_ml.monitoring.performance_metrics import performance_status
from lakehouse_ml.monitoring.signals import INFORMATION

REFERENCE = {"roc_auc": {"value": 0.80}}
DROP = {"warn": 0.03, "act": 0.05}


def _row(metric: str = "roc_auc", value: float = 0.70, upper: float | None = 0.72, trusted: bool = True) -> dict:
    return {"metric": metric, "value": value, "upper": upper, "trusted": trusted}


def test_a_realized_drop_acts_only_when_its_whole_band_is_below_the_act_level():
    status = performance_status(_row(), REFERENCE, DROP)
    assert (status["warn"], status["act"], status["status"]) == (pytest.approx(0.77), pytest.approx(0.75), "act")
    # The band reaches the act level: the drop may be a small window's noise, so it only warns.
    assert performance_status(_row(upper=0.76), REFERENCE, DROP)["status"] == "warn"


def test_an_estimate_has_no_band_and_acts_on_its_value():
    assert performance_status(_row("estimated_roc_auc", upper=None), REFERENCE, DROP)["status"] == "act"


def test_untrusted_rows_and_other_metrics_get_no_verdict():
    assert performance_status(_row(trusted=False), REFERENCE, DROP) == {
        "warn": None,
        "act": None,
        "status": "untrusted",
    }
    assert performance_status(_row("ece"), REFERENCE, DROP) == INFORMATION
    assert performance_status(_row(), {}, DROP) == INFORMATION  # a version without a reference ROC AUC
