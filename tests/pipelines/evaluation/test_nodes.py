"""Evaluation nodes on hand-made frames: the gates report and its metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lakehouse_ml.features.tables import LABEL
from lakehouse_ml.pipelines.evaluation.nodes import apply_gates

EVALUATION = {
    "floors": {"roc_auc": 0.75},
    "ceilings": {"log_loss": 0.45},
    "slices": {"floors": {"roc_auc": 0.70}, "max_drop_vs_champion": {"roc_auc": 0.03}},
    "champion_comparison": {"mode": "non_inferiority", "metrics": {"roc_auc": 0.005}},
}
TRAINING = {"slices": {}, "min_slice_rows": 10}
RUN = {"run_id": "0123abcd", "git_sha": "f00d", "env": "test"}


def _serving(passed: bool = True) -> dict:
    gate = {"passed": passed, "detail": "ok" if passed else "p95 80 ms over 50 ms", "checks": []}
    return {
        "signature": {"name": "signature", **gate, "passed": True, "detail": "matches"},
        "smoke_test": {"name": "smoke_test", **gate, "passed": True, "detail": "20 rows scored"},
        "latency": {"name": "latency", **gate},
        "latency_ms": {"single_row": {"p50": 3.0, "p95": 4.0 if passed else 80.0}},
    }


def _scored(candidate_separates: bool, with_champion: bool = False) -> pd.DataFrame:
    labels = np.array([0, 1] * 100)
    good = np.where(labels == 1, 0.8, 0.2)
    frame = pd.DataFrame({LABEL: labels, "candidate_score": good if candidate_separates else 1 - good})
    if with_champion:
        frame["champion_score"] = good
    return frame


def _context(champion: dict | None = None) -> dict:
    return {
        "candidate": {"run_id": "cand", "model_uri": "runs:/cand/model", "threshold": 0.5},
        "champion": champion,
        "training_set": {"path": "/lake/training_set", "version": 4},
        "test_cutoffs": ["2026-01-01"],
    }


def test_a_candidate_that_passes_every_gate_links_its_report_to_the_node_run():
    report, metrics = apply_gates(_scored(True), _context(), _serving(), EVALUATION, TRAINING, RUN)
    assert report["passed"] is True
    assert report["summary"] == "6/6 gates passed"
    assert report["evaluation_run_id"] == "0123abcd"
    assert report["report_uri"] == "runs:/0123abcd/reports/gates.json"
    assert [g["name"] for g in report["gates"]][:3] == ["absolute_limits", "slices", "champion_comparison"]
    assert report["metrics"]["candidate"]["overall"]["roc_auc"] == pytest.approx(1.0)
    assert metrics["gates_passed"] == {"value": 1.0, "step": 0}
    assert metrics["candidate.roc_auc"]["value"] == pytest.approx(1.0)
    assert metrics["latency.single_row.p95_ms"]["value"] == 4.0
    # Every metric is finite: MLflow would chart a NaN as a score.
    assert all(np.isfinite(m["value"]) for m in metrics.values())


def test_without_tracking_the_report_has_no_run_to_link_to():
    report, _ = apply_gates(_scored(True), _context(), _serving(), EVALUATION, TRAINING, None)
    assert report["evaluation_run_id"] is None
    assert report["report_uri"] is None


def test_failed_gates_are_named_in_the_summary_with_their_detail():
    report, metrics = apply_gates(_scored(False), _context(), _serving(passed=False), EVALUATION, TRAINING, RUN)
    assert report["passed"] is False
    assert report["summary"].startswith("failed: absolute_limits (")
    assert "latency (p95 80 ms over 50 ms)" in report["summary"]
    assert metrics["gate.absolute_limits.passed"]["value"] == 0.0
    assert metrics["gate.latency.passed"]["value"] == 0.0
    assert metrics["gates_passed"]["value"] == 0.0


def test_a_champion_that_cannot_score_the_window_fails_the_comparison_instead_of_passing_it():
    champion = {"version": "3", "run_id": "champ", "model_uri": "models:/m/3", "threshold": 0.5}
    report, _ = apply_gates(
        _scored(True),
        _context({**champion, "error": "missing column tenure_days"}),
        _serving(),
        EVALUATION,
        TRAINING,
        RUN,
    )
    comparison = next(g for g in report["gates"] if g["name"] == "champion_comparison")
    assert comparison["passed"] is False
    assert comparison["detail"] == "champion version 3 cannot be scored on this window: missing column tenure_days"
    assert report["passed"] is False


def test_a_scored_champion_is_measured_and_compared():
    champion = {"version": "3", "run_id": "champ", "model_uri": "models:/m/3", "threshold": 0.5, "error": None}
    report, metrics = apply_gates(
        _scored(True, with_champion=True), _context(champion), _serving(), EVALUATION, TRAINING, RUN
    )
    comparison = next(g for g in report["gates"] if g["name"] == "champion_comparison")
    assert comparison["passed"] is True and comparison["checks"]
    assert report["metrics"]["champion"]["overall"]["roc_auc"] == pytest.approx(1.0)
    assert "champion.roc_auc" in metrics
