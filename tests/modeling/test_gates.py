"""Gate functions on hand-made figures: each limit's direction, champion comparisons, signatures,
smoke-test outputs and latency budgets."""

from __future__ import annotations

import numpy as np
import pytest

from lakehouse_ml.modeling.gates import (
    absolute_limits_gate,
    champion_comparison_gate,
    latency_gate,
    signature_gate,
    slice_gate,
    smoke_test_gate,
)


def test_absolute_limits_floors_and_ceilings():
    """roc_auc 0.80 >= 0.75 passes; log_loss 0.50 > ceiling 0.45 fails; an unmeasured metric fails."""
    gate = absolute_limits_gate({"roc_auc": 0.80, "log_loss": 0.50}, {"roc_auc": 0.75}, {"log_loss": 0.45})
    assert not gate["passed"]
    assert [c["passed"] for c in gate["checks"]] == [True, False]
    assert gate["detail"] == "log_loss 0.5000 not <= ceiling 0.4500"
    assert absolute_limits_gate({"roc_auc": 0.75, "log_loss": 0.45}, {"roc_auc": 0.75}, {"log_loss": 0.45})["passed"]
    missing = absolute_limits_gate({"roc_auc": 0.9}, {"pr_auc": 0.5}, {})
    assert not missing["passed"] and missing["detail"] == "pr_auc not measured"


def _slices(**values):
    """{slice: {value: entry}} with roc_auc figures; None means counts only (skipped)."""
    report = {}
    for key, auc in values.items():
        name, value = key.split("__")
        report.setdefault(name, {})[value] = (
            {"rows": 500} if auc is None else {"rows": 500, "metrics": {"roc_auc": auc}}
        )
    return report


def test_slice_gate_floor_and_drop_against_the_champion():
    """DE 0.80 vs champion 0.84: drop 0.04 > 0.03 fails; FR 0.69 < floor 0.70 fails; US skipped."""
    candidate = _slices(country__DE=0.80, country__FR=0.69, country__US=None, plan__basic=0.83)
    champion = _slices(country__DE=0.84, country__FR=0.70, country__US=0.9, plan__basic=0.85)
    gate = slice_gate(candidate, champion, {"roc_auc": 0.70}, {"roc_auc": 0.03})
    failed = {c["subject"] for c in gate["checks"] if not c["passed"]}
    assert failed == {"roc_auc on country=DE vs champion", "roc_auc on country=FR"}
    # basic: 0.83 >= 0.85 - 0.03 = 0.82 passes; no US check at all (skipped on the candidate).
    assert not any("US" in c["subject"] for c in gate["checks"])
    assert slice_gate(candidate, None, {"roc_auc": 0.60}, {"roc_auc": 0.03})["passed"]  # no champion: floors only
    assert slice_gate({}, None, {"roc_auc": 0.6}, {})["detail"] == "skipped: no slice measured"


@pytest.mark.parametrize(
    ("mode", "candidate", "passed"),
    [
        ("non_inferiority", 0.846, True),  # 0.846 >= 0.85 - 0.005 = 0.845
        ("non_inferiority", 0.844, False),
        ("min_improvement", 0.855, True),  # 0.855 >= 0.85 + 0.005
        ("min_improvement", 0.852, False),
    ],
)
def test_champion_comparison_modes(mode, candidate, passed):
    gate = champion_comparison_gate(
        {"roc_auc": candidate}, {"roc_auc": 0.85}, {"mode": mode, "metrics": {"roc_auc": 0.005}}
    )
    assert gate["passed"] is passed


def test_champion_comparison_lower_is_better_and_first_release():
    """log_loss: non-inferiority allows champion + margin (0.40 + 0.01 = 0.41)."""
    policy = {"mode": "non_inferiority", "metrics": {"log_loss": 0.01}}
    assert champion_comparison_gate({"log_loss": 0.409}, {"log_loss": 0.40}, policy)["passed"]
    assert not champion_comparison_gate({"log_loss": 0.411}, {"log_loss": 0.40}, policy)["passed"]
    first = champion_comparison_gate({"roc_auc": 0.1}, None, policy)
    assert first["passed"] and first["detail"] == "no champion yet: first release"
    with pytest.raises(ValueError, match="non_inferiority or min_improvement"):
        champion_comparison_gate({}, {}, {"mode": "vibes"})


def test_signature_gate_breaking_and_allowed_changes():
    serving = [
        {"name": "a", "type": "double", "required": True},
        {"name": "b", "type": "string", "required": True},
        {"name": "c", "type": "double", "required": True},
    ]
    candidate = [
        {"name": "a", "type": "double", "required": True},
        {"name": "b", "type": "long", "required": True},
        {"name": "c_renamed", "type": "double", "required": True},
        {"name": "d", "type": "double", "required": False},
    ]
    gate = signature_gate(candidate, serving, "champion version 3")
    verdicts = {c["subject"]: c["passed"] for c in gate["checks"]}
    assert verdicts == {"a": True, "b": False, "c": False, "c_renamed": False, "d": True}
    assert "c (double) removed or renamed vs champion version 3" in gate["detail"]
    assert "b: type long vs string in champion version 3" in gate["detail"]
    same = signature_gate([*serving, {"name": "e", "type": "double", "required": False}], serving, "x")
    assert same["passed"]  # a new optional column is allowed


def test_smoke_test_gate_shape_range_and_errors():
    good = {"payload": "ok", "rows": 2, "probabilities": [[0.2, 0.8], [1.0, 0.0]]}
    outputs = [
        good,
        {"payload": "one_column", "rows": 2, "probabilities": [[0.8], [0.1]]},
        {"payload": "nan", "rows": 1, "probabilities": [[np.nan, np.nan]]},
        {"payload": "not_summing", "rows": 1, "probabilities": [[0.5, 0.6]]},
        {"payload": "raised", "rows": 1, "error": "ValueError: Input X contains NaN"},
    ]
    gate = smoke_test_gate(outputs)
    assert [c["passed"] for c in gate["checks"]] == [True, False, False, False, False]
    assert "raised: scoring raised ValueError: Input X contains NaN" in gate["detail"]
    assert smoke_test_gate([good])["passed"]


def test_latency_gate_uses_p95_against_each_budget():
    measured = {"single_row": {"p95": 12.0}, "batch_100": {"p95": 250.0}}
    gate = latency_gate(measured, {"single_row": 50, "batch_100": 200})
    assert [c["passed"] for c in gate["checks"]] == [True, False]
    assert gate["detail"] == "p95 batch_100 ms 250.0000 not <= budget 200.0000"
