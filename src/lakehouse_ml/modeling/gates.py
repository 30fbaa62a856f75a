"""Validation gates: small pure functions from measured figures and policy to a verdict.

Every gate returns ``{"name", "passed", "detail", "checks": [...]}``: ``checks`` holds each
compared figure with its limit, so a report says why, not only whether.
"""

from __future__ import annotations

from typing import Any

import numpy as np

LOWER_IS_BETTER = {"log_loss", "brier", "calibration_error"}


def _gate(name: str, checks: list[dict[str, Any]], skipped: str | None = None) -> dict[str, Any]:
    failed = [c for c in checks if not c["passed"]]
    if skipped:
        detail = f"skipped: {skipped}"
    elif failed:
        detail = "; ".join(c["detail"] for c in failed)
    else:
        detail = f"{len(checks)} checks passed"
    return {"name": name, "passed": not failed, "detail": detail, "checks": checks}


def _check(subject: str, value: float | None, limit: float, lower_is_better: bool, relation: str) -> dict[str, Any]:
    if value is None or not np.isfinite(value):
        return {"subject": subject, "value": None, "limit": limit, "passed": False, "detail": f"{subject} not measured"}
    passed = value <= limit if lower_is_better else value >= limit
    sign = "<=" if lower_is_better else ">="
    detail = f"{subject} {value:.4f} {'' if passed else 'not '}{sign} {relation} {limit:.4f}"
    return {"subject": subject, "value": float(value), "limit": float(limit), "passed": bool(passed), "detail": detail}


def absolute_limits_gate(
    metrics: dict[str, float], floors: dict[str, float], ceilings: dict[str, float]
) -> dict[str, Any]:
    """Gate 1: each metric at or above its floor, at or below its ceiling.

    The verdict is also asked of ``mlflow.validate_evaluation_results`` (MLflow's own threshold
    validation); the per-metric checks say which limit failed.
    """
    from mlflow.models import EvaluationResult, MetricThreshold
    from mlflow.models.evaluation.validation import ModelValidationFailedException

    checks = [_check(m, metrics.get(m), float(v), False, "floor") for m, v in (floors or {}).items()]
    checks += [_check(m, metrics.get(m), float(v), True, "ceiling") for m, v in (ceilings or {}).items()]
    thresholds = {m: MetricThreshold(threshold=float(v), greater_is_better=True) for m, v in (floors or {}).items()}
    thresholds |= {m: MetricThreshold(threshold=float(v), greater_is_better=False) for m, v in (ceilings or {}).items()}
    measured = {m: v for m, v in metrics.items() if v is not None and np.isfinite(v)}
    try:
        if thresholds.keys() <= measured.keys():
            import mlflow

            mlflow.validate_evaluation_results(thresholds, EvaluationResult(metrics=measured, artifacts={}))
    except ModelValidationFailedException as failure:
        if all(c["passed"] for c in checks):  # only news when our own checks missed it
            checks.append(
                {"subject": "mlflow.validate_evaluation_results", "passed": False, "detail": str(failure).strip()}
            )
    return _gate("absolute_limits", checks)


def _measured_slices(report: dict[str, dict[str, dict[str, Any]]]) -> dict[tuple[str, str], dict[str, float]]:
    return {(s, v): e["metrics"] for s, values in report.items() for v, e in values.items() if "metrics" in e}


def slice_gate(
    candidate: dict[str, dict[str, dict[str, Any]]],
    champion: dict[str, dict[str, dict[str, Any]]] | None,
    floors: dict[str, float],
    max_drop: dict[str, float],
) -> dict[str, Any]:
    """Gate 2: no measured slice below its floor, none worse than the champion's by more than ``max_drop``."""
    checks = []
    champion_slices = _measured_slices(champion) if champion else {}
    for (name, value), metrics in sorted(_measured_slices(candidate).items()):
        subject = f"{name}={value}"
        for metric, floor in (floors or {}).items():
            checks.append(
                _check(f"{metric} on {subject}", metrics.get(metric), float(floor), metric in LOWER_IS_BETTER, "floor")
            )
        base = champion_slices.get((name, value))
        for metric, drop in (max_drop or {}).items() if base else ():
            lower = metric in LOWER_IS_BETTER
            limit = base[metric] + float(drop) if lower else base[metric] - float(drop)
            checks.append(
                _check(
                    f"{metric} on {subject} vs champion",
                    metrics.get(metric),
                    limit,
                    lower,
                    "champion's minus tolerance",
                )
            )
    return _gate("slices", checks, skipped=None if checks else "no slice measured")


def champion_comparison_gate(
    candidate: dict[str, float], champion: dict[str, float] | None, policy: dict[str, Any]
) -> dict[str, Any]:
    """Gate 3: non-inferiority (candidate >= champion - margin) or a minimum improvement, per metric.

    Without a champion there is nothing to compare with: the gate passes and says so.
    """
    if champion is None:
        return {"name": "champion_comparison", "passed": True, "detail": "no champion yet: first release", "checks": []}
    mode = policy.get("mode", "non_inferiority")
    if mode not in ("non_inferiority", "min_improvement"):
        raise ValueError(
            f"evaluation.champion_comparison.mode must be non_inferiority or min_improvement, got {mode!r}"
        )
    checks = []
    for metric, amount in (policy.get("metrics") or {}).items():
        lower = metric in LOWER_IS_BETTER
        base = champion.get(metric)
        if base is None:
            checks.append(
                {
                    "subject": metric,
                    "value": candidate.get(metric),
                    "limit": None,
                    "passed": False,
                    "detail": f"champion's {metric} not measured",
                }
            )
            continue
        shift = -float(amount) if mode == "non_inferiority" else float(amount)
        limit = base - shift if lower else base + shift
        relation = "champion's " + ("minus margin" if mode == "non_inferiority" else "plus minimum improvement")
        checks.append(_check(metric, candidate.get(metric), limit, lower, relation))
    return _gate("champion_comparison", checks)


def signature_gate(candidate: list[dict[str, Any]], serving: list[dict[str, Any]], reference: str) -> dict[str, Any]:
    """Gate 4: the candidate accepts what serving sends.

    Columns are ``{name, type, required}``. A serving column missing from the candidate (removed or
    renamed) or with another type is breaking; a new candidate column is allowed only if optional.
    """
    ours, theirs = {c["name"]: c for c in candidate}, {c["name"]: c for c in serving}
    checks = []
    for name, column in theirs.items():
        if name not in ours:
            checks.append(
                {
                    "subject": name,
                    "passed": False,
                    "detail": f"{name} ({column['type']}) removed or renamed vs {reference}",
                }
            )
        elif ours[name]["type"] != column["type"]:
            checks.append(
                {
                    "subject": name,
                    "passed": False,
                    "detail": f"{name}: type {ours[name]['type']} vs {column['type']} in {reference}",
                }
            )
        else:
            checks.append({"subject": name, "passed": True, "detail": f"{name}: {column['type']}"})
    for name in sorted(set(ours) - set(theirs)):
        optional = not ours[name].get("required", True)
        checks.append(
            {
                "subject": name,
                "passed": optional,
                "detail": f"{name}: new {'optional' if optional else 'required'} column, not in {reference}",
            }
        )
    return _gate("signature", checks)


def smoke_test_gate(outputs: list[dict[str, Any]]) -> dict[str, Any]:
    """Gate 5: every payload scored into finite probabilities of the right shape.

    ``outputs``: ``{payload, rows, shape, error}`` per payload, ``shape`` and ``probabilities``
    as returned by the loaded model (``error`` when scoring raised).
    """
    checks = []
    for out in outputs:
        name = out["payload"]
        if out.get("error"):
            checks.append({"subject": name, "passed": False, "detail": f"{name}: scoring raised {out['error']}"})
            continue
        values = np.asarray(out["probabilities"], dtype=float)
        problems = []
        if values.shape != (out["rows"], 2):
            problems.append(f"shape {values.shape}, expected ({out['rows']}, 2)")
        elif not np.isfinite(values).all() or (values < 0).any() or (values > 1).any():
            problems.append("values outside [0, 1] or not finite")
        elif not np.allclose(values.sum(axis=1), 1.0, atol=1e-6):
            problems.append("class probabilities do not sum to 1")
        checks.append(
            {
                "subject": name,
                "passed": not problems,
                "detail": f"{name}: " + ("; ".join(problems) if problems else f"{out['rows']} rows scored"),
            }
        )
    return _gate("smoke_test", checks)


def latency_gate(measured_ms: dict[str, dict[str, float]], budgets_ms: dict[str, float]) -> dict[str, Any]:
    """Gate 6: p95 latency of each measured batch size within its budget (milliseconds)."""
    checks = [
        _check(f"p95 {name} ms", measured_ms.get(name, {}).get("p95"), float(budget), True, "budget")
        for name, budget in (budgets_ms or {}).items()
    ]
    return _gate("latency", checks)
