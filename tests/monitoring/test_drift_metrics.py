"""The drift_metrics table on tiny hand-made signal frames: each window against the previous one."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pandas as pd
import pytest

from lakehouse_ml.monitoring.drift import psi
from lakehouse_ml.monitoring.drift_metrics import versus_previous
from lakehouse_ml.monitoring.signals import SIGNAL_TABLE_COLUMNS


def _signal(window: date, feature: str, metric: str, shares) -> dict:
    return {
        "window_start": window,
        "window_end": window + timedelta(days=1),
        "source": "batch",
        "model_name": "m",
        "model_version": "1",
        "slice": "all",
        "slice_value": "all",
        "feature": feature,
        "metric": metric,
        "value": 0.0,
        "warn": 0.1,
        "act": 0.25,
        "status": "ok",
        "n_rows": 10,
        "details": json.dumps({"shares": shares}),
    }


def test_each_window_is_compared_with_the_previous_one_on_the_baseline_bins():
    d1, d2, d3 = date(2026, 6, 1), date(2026, 6, 2), date(2026, 6, 3)
    signals = pd.DataFrame(
        [
            _signal(d2, "x", "psi", [0.5, 0.5, 0.0]),
            _signal(d1, "x", "psi", [0.5, 0.5, 0.0]),
            _signal(d3, "x", "psi", [0.1, 0.4, 0.5]),
            _signal(d1, "c", "js_distance", {"a": 1.0}),
            _signal(d2, "c", "js_distance", {"b": 1.0}),
        ],
        columns=SIGNAL_TABLE_COLUMNS,
    )

    previous = versus_previous(signals).set_index(["feature", "window_start"])

    assert previous.loc[("x", d2), "value"] == pytest.approx(0.0)  # the same shares
    # d3 vs d2: the PSI of the shares with the floor 1e-4 for the empty bin.
    assert previous.loc[("x", d3), "value"] == pytest.approx(psi([0.5, 0.5, 0.0], [0.1, 0.4, 0.5]))
    assert previous.loc[("x", d3), "status"] == "act" and previous.loc[("x", d3), "metric"] == "psi_vs_previous"
    # Disjoint categories: the largest JS distance, sqrt(ln 2).
    assert previous.loc[("c", d2), "value"] == pytest.approx(0.8325546)
    assert ("x", d1) not in previous.index  # the first window has nothing before it
