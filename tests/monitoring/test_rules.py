"""Monitoring rules on tiny hand-made signal frames: N of K, levels, filters, promotion periods,
action ids, evidence, validation and the action policy.

Windows are daily: window ``i`` (1-based) is ``[2024-01-i, 2024-01-(i+1))``. Unless a test says
otherwise a signal row is a drift PSI row of model ``churn`` version ``1``, feature ``age``, slice
``all``, source ``batch``, with warn 0.1 and act 0.25.
"""

from __future__ import annotations

import json
import uuid
from datetime import date, datetime

import pandas as pd
import pytest

from lakehouse_ml.monitoring.rules import (
    ACTION_NAMESPACE,
    FIRED_COLUMNS,
    RESOLVED_COLUMNS,
    action_id,
    evaluate_rules,
    resolve_actions,
    validate_rules,
)

VALUE_OF = {"ok": 0.05, "warn": 0.15, "act": 0.3, "no_data": float("nan"), "untrusted": 0.3}


def day(i: int) -> date:
    """The start of window ``i``: 2024-01-i."""
    return date(2024, 1, i)


def row(window: int, status: str, **overrides) -> dict:
    """One signal row of window ``window`` (defaults in the module docstring)."""
    base = {
        "table": "drift_metrics",
        "window_start": day(window),
        "window_end": day(window + 1),
        "source": "batch",
        "model_name": "churn",
        "model_version": "1",
        "slice": "all",
        "slice_value": "all",
        "feature": "age",
        "metric": "psi",
        "value": VALUE_OF[status],
        "warn": 0.1,
        "act": 0.25,
        "status": status,
        "n_rows": 100,
        "details": None,
    }
    return {**base, **overrides}


def series(statuses: list[str], **overrides) -> list[dict]:
    """One row per window 1, 2, … with the given statuses."""
    return [row(i, status, **overrides) for i, status in enumerate(statuses, start=1)]


def signals(*rows: list[dict] | dict) -> pd.DataFrame:
    """A signal frame from rows and lists of rows."""
    flat = [r for item in rows for r in (item if isinstance(item, list) else [item])]
    return pd.DataFrame(flat)


def rule(**overrides) -> dict:
    """A drift rule on PSI: retrain when 2 of the last 3 windows reach act."""
    return {"name": "psi_act", "action": "retrain", "table": "drift_metrics", "metrics": ["psi"], **overrides}


def fired_windows(statuses: list[str], **rule_overrides) -> list[tuple[int, int]]:
    """(breached, considered) of each firing of ``rule(**rule_overrides)`` on one series."""
    fired = evaluate_rules(signals(series(statuses)), [rule(**rule_overrides)])
    return list(zip(fired["breached_windows"], fired["considered_windows"]))


# ---------------------------------------------------------------- N of K


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (["ok", "act", "act"], [(2, 3)]),  # 2 of 3, latest breaches
        (["act", "ok", "act"], [(2, 3)]),  # not consecutive: still 2 of 3
        (["act", "act", "act"], [(3, 3)]),
        (["ok", "ok", "act"], []),  # a single spike: 1 of 3
        (["act", "act", "ok"], []),  # 2 of 3 but recovered in the latest window
        (["act", "act", "act", "ok", "ok", "act"], []),  # older breaches fell out of the last 3
        (["act", "act"], [(2, 2)]),  # fewer windows than K: 2 of the 2 there are
        (["act"], []),  # 1 window cannot hold 2 breaches
    ],
)
def test_two_of_last_three_windows_with_the_latest_breaching_fires(statuses, expected):
    assert fired_windows(statuses) == expected


def test_flapping_windows_fire_a_two_of_three_rule_only_on_breaching_windows_and_never_three_of_three():
    flapping = ["act", "ok", "act", "ok", "act"]
    # Prefixes ending in window t: last 3 of act,ok,act (t=3, t=5) hold 2 breaches with the latest
    # breaching; t=4 ends on ok; t=1, t=2 hold 1 breach.
    two_of_three = [bool(fired_windows(flapping[:t])) for t in range(1, 6)]
    assert two_of_three == [False, False, True, False, True]
    assert all(not fired_windows(flapping[:t], breaching_windows=3) for t in range(1, 6))
    # the two firings are on different latest windows: two distinct actions, not one repeated
    ids = {evaluate_rules(signals(series(flapping[:t])), [rule()])["action_id"][0] for t in (3, 5)}
    assert len(ids) == 2


def test_a_window_with_only_no_data_rows_counts_as_a_window_and_never_breaches():
    # act, act, no_data: the latest window is the no_data one, so the rule waits
    assert fired_windows(["act", "act", "no_data"]) == []
    # act, no_data, act: 2 of 3 (the no_data window takes a slot among the last 3)
    assert fired_windows(["act", "no_data", "act"]) == [(2, 3)]
    assert fired_windows(["act", "no_data", "act"], breaching_windows=3) == []
    # untrusted never breaches, even at level warn and with a value above act
    assert fired_windows(["act", "untrusted", "untrusted"], level="warn", breaching_windows=1) == []


def test_windows_are_those_of_the_version_in_the_rules_table_whatever_the_rows_filters():
    # 'age' breaches in windows 1 and 2; window 3 holds only an ok 'income' row: still the latest
    # window of the version, and it does not breach.
    frame = signals(series(["act", "act"]), row(3, "ok", feature="income"))
    assert evaluate_rules(frame, [rule(features=["age"])]).empty
    # A later window in another table (data quality) is not a window of the drift table.
    frame = signals(series(["act", "act"]), row(3, "ok", table="data_quality", metric="null_share"))
    assert evaluate_rules(frame, [rule()])["window_end"].tolist() == [day(3)]


def test_each_model_version_is_evaluated_on_its_own_windows():
    frame = signals(
        series(["act", "act"]),
        series(["ok", "act"], model_version="2"),
        series(["act", "act", "act"], model_name="upsell"),
    )
    fired = evaluate_rules(frame, [rule()])
    assert fired[["model_name", "model_version", "breached_windows"]].values.tolist() == [
        ["churn", "1", 2],
        ["upsell", "1", 3],
    ]


# ---------------------------------------------------------------- level and filters


def test_level_warn_counts_warn_and_act_while_level_act_counts_only_act():
    assert fired_windows(["warn", "warn", "warn"]) == []
    assert fired_windows(["warn", "warn", "warn"], level="warn") == [(3, 3)]
    assert fired_windows(["ok", "act", "warn"], level="warn") == [(2, 3)]
    assert fired_windows(["ok", "act", "warn"], level="act") == []


def test_feature_filter_and_null_feature_rows():
    frame = signals(
        series(["act", "act"], feature="income"),
        series(["act", "act"], feature=None, metric="psi"),  # e.g. a whole-model row
    )
    assert evaluate_rules(frame, [rule(features=["age"])]).empty
    assert len(evaluate_rules(frame, [rule(features=["income"])])) == 1
    assert len(evaluate_rules(frame, [rule(features=None)])) == 1  # any feature, null included
    only_null = evaluate_rules(frame, [rule(features=[None])])
    rows = [r for w in json.loads(only_null["evidence"][0]) for r in w["rows"]]
    assert {r["feature"] for r in rows} == {None}


def test_slice_filter_defaults_to_all_and_star_matches_any_slice():
    frame = signals(series(["ok", "ok"]), series(["act", "act"], slice="country", slice_value="FR"))
    assert evaluate_rules(frame, [rule()]).empty  # default slices ['all']
    assert len(evaluate_rules(frame, [rule(slices=["country"])])) == 1
    assert len(evaluate_rules(frame, [rule(slices=["*"])])) == 1
    assert evaluate_rules(frame, [rule(slices=["device"])]).empty


def test_source_and_metric_filters():
    frame = signals(series(["act", "act"], source="online"), series(["ok", "ok"], source="batch"))
    assert evaluate_rules(frame, [rule(sources=["batch"])]).empty
    assert len(evaluate_rules(frame, [rule(sources=["online"])])) == 1
    assert len(evaluate_rules(frame, [rule()])) == 1  # sources null: any
    assert evaluate_rules(frame, [rule(metrics=["js_distance"])]).empty


# ---------------------------------------------------------------- promotion period


PROMOTION_FRAME = ["act", "act", "ok", "act", "act", "ok"]  # windows 1..6


def test_within_days_of_promotion_counts_only_windows_starting_in_the_period():
    frame = signals(series(PROMOTION_FRAME))
    # Without the period the last 3 windows are 4, 5, 6 and window 6 is ok: nothing fires.
    assert evaluate_rules(frame, [rule()]).empty
    # Promoted on 2024-01-03 at 15:00, D = 2: windows starting 01-03, 01-04, 01-05 count (days 0, 1,
    # 2 after the promotion day): ok, act, act -> 2 of 3, latest (window 5, ending 01-06) breaches.
    promotions = {"churn/1": datetime(2024, 1, 3, 15, 0)}
    fired = evaluate_rules(frame, [rule(within_days_of_promotion=2)], promotions=promotions)
    assert fired[["window_start", "window_end", "breached_windows", "considered_windows"]].values.tolist() == [
        [day(5), day(6), 2, 3]
    ]
    # D = 1: windows 3, 4 only (ok, act): 1 breach < 2
    assert evaluate_rules(frame, [rule(within_days_of_promotion=1)], promotions=promotions).empty
    # keyed by the bare version too; the qualified key wins when both are there
    bare = {"1": datetime(2024, 1, 3)}
    assert len(evaluate_rules(frame, [rule(within_days_of_promotion=2)], promotions=bare)) == 1
    both = {"1": datetime(2024, 1, 3), "churn/1": datetime(2024, 1, 10)}  # 01-10: no window in the period
    assert evaluate_rules(frame, [rule(within_days_of_promotion=2)], promotions=both).empty


def test_a_version_without_a_promotion_time_never_fires_a_promotion_rule():
    frame = signals(series(["act", "act", "act"]))
    assert evaluate_rules(frame, [rule(within_days_of_promotion=30)]).empty
    other_version = {"churn/2": datetime(2024, 1, 1)}
    assert evaluate_rules(frame, [rule(within_days_of_promotion=30)], promotions=other_version).empty
    assert len(evaluate_rules(frame, [rule()], promotions={})) == 1  # other rules do not need one


# ---------------------------------------------------------------- output


def test_action_id_is_uuid5_of_rule_model_version_and_latest_window_end_and_stable_across_runs():
    frame = signals(series(["ok", "act", "act"]))
    first = evaluate_rules(frame, [rule()])
    again = evaluate_rules(frame.sample(frac=1.0, random_state=0), [rule()])  # row order does not matter
    expected = str(uuid.uuid5(ACTION_NAMESPACE, "psi_act|churn|1|2024-01-04"))
    assert first["action_id"].tolist() == again["action_id"].tolist() == [expected]
    # pinned: changing the namespace would re-id every recorded action
    assert expected == "667ab16a-4022-5dfc-a022-5a5f2e6a45dc"
    assert action_id("psi_act", "churn", "1", day(5)) != expected  # next window: a new action
    assert action_id("psi_warn", "churn", "1", day(4)) != expected


def test_fired_row_columns_and_values():
    frame = signals(series(["ok", "act", "act"]))
    frame["window_start"] = pd.to_datetime(frame["window_start"])  # pandas timestamps are accepted too
    fired = evaluate_rules(frame, [rule(description="PSI drift on 2 of 3 days")])
    assert fired.columns.tolist() == FIRED_COLUMNS
    record = fired.iloc[0].to_dict()
    assert {k: v for k, v in record.items() if k not in ("action_id", "evidence")} == {
        "rule": "psi_act",
        "action": "retrain",
        "model_name": "churn",
        "model_version": "1",
        "window_start": day(3),
        "window_end": day(4),
        "breached_windows": 2,
        "considered_windows": 3,
        "description": "PSI drift on 2 of 3 days",
    }


def test_evidence_lists_each_breaching_window_with_its_five_worst_rows():
    # Window 1 ok; window 2 one act row; window 3 seven breaching rows at level warn plus an ok one.
    # Exceedance (value - warn) / (act - warn), PSI: warn 0.1, act 0.25 (divide by 0.15);
    # AUC: warn 0.75, act 0.70 (lower is worse: divide by -0.05).
    w3 = [
        row(3, "act", feature="a", value=0.30),  # 1.333
        row(3, "act", feature="b", value=0.50),  # 2.667
        row(3, "act", feature=None, metric="auc", value=0.60, warn=0.75, act=0.70),  # 3.0
        row(3, "act", feature="c", value=0.26),  # 1.067
        row(3, "warn", feature="d", value=0.20),  # 0.667
        row(3, "warn", feature="e", value=0.11),  # 0.067
        row(3, "warn", feature=None, metric="auc", value=0.72, warn=0.75, act=0.70),  # 0.6
        row(3, "ok", feature="f", value=0.01),
    ]
    frame = signals(row(1, "ok"), row(2, "act", value=0.4), w3)
    fired = evaluate_rules(frame, [rule(metrics=["psi", "auc"], features=None, level="warn")])
    evidence = json.loads(fired["evidence"][0])
    assert [(w["window_start"], w["window_end"], w["breaching_rows"]) for w in evidence] == [
        ("2024-01-02", "2024-01-03", 1),
        ("2024-01-03", "2024-01-04", 7),
    ]
    # act rows by exceedance (auc 3.0, b 2.667, a 1.333, c 1.067), then warn d (0.667); auc 0.72 and e drop
    assert [(r["feature"], r["metric"], r["status"]) for r in evidence[1]["rows"]] == [
        (None, "auc", "act"),
        ("b", "psi", "act"),
        ("a", "psi", "act"),
        ("c", "psi", "act"),
        ("d", "psi", "warn"),
    ]
    assert evidence[1]["rows"][1] == {
        "feature": "b",
        "slice": "all",
        "slice_value": "all",
        "source": "batch",
        "metric": "psi",
        "value": 0.5,
        "warn": 0.1,
        "act": 0.25,
        "status": "act",
    }
    assert evidence[0]["rows"] == [{**evidence[1]["rows"][1], "feature": "age", "value": 0.4}]


def test_evidence_writes_missing_values_as_null():
    frame = signals(series(["act", "act"], value=float("nan"), warn=None, act=None))
    evidence = json.loads(evaluate_rules(frame, [rule()])["evidence"][0])
    assert evidence[0]["rows"][0]["value"] is None and evidence[0]["rows"][0]["act"] is None


def test_nothing_fired_gives_an_empty_frame_with_the_columns():
    for frame in (signals(series(["ok", "ok"])), pd.DataFrame(columns=list(row(1, "ok")))):
        fired = evaluate_rules(frame, [rule()])
        assert fired.empty and fired.columns.tolist() == FIRED_COLUMNS
        assert str(fired["breached_windows"].dtype) == "int64"


def test_several_rules_fire_independently():
    frame = signals(series(["warn", "act", "act"]))
    fired = evaluate_rules(frame, [rule(), rule(name="psi_warn", action="block_promotion", level="warn", of_last=2)])
    assert fired[["rule", "breached_windows", "considered_windows"]].values.tolist() == [
        ["psi_act", 2, 3],
        ["psi_warn", 2, 2],
    ]


# ---------------------------------------------------------------- validation


def test_validate_rules_fills_defaults_and_copies():
    raw = [rule()]
    checked = validate_rules(raw)
    assert checked == [
        {
            "name": "psi_act",
            "action": "retrain",
            "table": "drift_metrics",
            "metrics": ["psi"],
            "features": None,
            "slices": ["all"],
            "sources": None,
            "level": "act",
            "breaching_windows": 2,
            "of_last": 3,
            "within_days_of_promotion": None,
            "description": "",
        }
    ]
    checked[0]["metrics"].append("x")
    assert raw[0]["metrics"] == ["psi"]  # the caller's rules are untouched


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([{k: v for k, v in rule().items() if k != "name"}], r"rule #0: missing required field 'name'"),
        ([rule(action=None)], r"rule 'psi_act' \(#0\): missing required field 'action'"),
        ([{k: v for k, v in rule().items() if k != "table"}], r"'psi_act'.*missing required field 'table'"),
        ([{k: v for k, v in rule().items() if k != "metrics"}], r"'psi_act'.*missing required field 'metrics'"),
        ([rule(action="retrian")], r"'psi_act'.*action is 'retrian'; expected one of"),
        ([rule(table="drift")], r"'psi_act'.*table is 'drift'; expected one of"),
        ([rule(level="critical")], r"'psi_act'.*level is 'critical'"),
        ([rule(), rule(action="rollback")], r"rule 'psi_act' \(#1\): name 'psi_act' is already used by rule #0"),
        ([rule(breaching_windows=0)], r"'psi_act'.*breaching_windows is 0; expected an integer >= 1"),
        ([rule(breaching_windows=3, of_last=2)], r"'psi_act'.*of_last is 2; expected an integer >= 3"),
        ([rule(breaching_window=2)], r"'psi_act'.*unknown field\(s\) \['breaching_window'\]"),
        ([rule(metrics="psi")], r"'psi_act'.*metrics is 'psi'; expected a non-empty list of strings"),
        ([rule(metrics=[])], r"metrics is \[\]"),
        ([rule(sources=["stream"])], r"sources item is 'stream'"),
        ([rule(of_last=True)], r"of_last is True"),
        ([rule(within_days_of_promotion=-1)], r"within_days_of_promotion is -1"),
        ([rule(), "retrain"], r"rule #1: is str; expected a mapping"),
        (rule(), r"rules is dict; expected a list"),
    ],
)
def test_validate_rules_names_the_rule_and_the_field(rules, message):
    with pytest.raises(ValueError, match=message):
        validate_rules(rules)


def test_evaluate_rules_validates_rules_and_signals():
    frame = signals(series(["act", "act"]))
    with pytest.raises(ValueError, match="unknown field"):
        evaluate_rules(frame, [rule(of_lats=3)])
    with pytest.raises(ValueError, match=r"signals: missing column\(s\) \['table'\]"):
        evaluate_rules(frame.drop(columns="table"), [rule()])
    with pytest.raises(ValueError, match=r"signals: status holds \['critical'\]"):
        evaluate_rules(signals(row(1, "ok"), {**row(2, "act"), "status": "critical"}), [rule()])
    with pytest.raises(ValueError, match=r"signals: model_version is null in 1 row"):
        evaluate_rules(signals(row(1, "ok"), row(2, "act", model_version=None)), [rule()])


# ---------------------------------------------------------------- policy


def fired_frame(*rows: tuple[str, str, str, int]) -> pd.DataFrame:
    """Fired actions from (rule, action, model_version, latest window) tuples."""
    records = [
        {
            "action_id": action_id(name, "churn", version, day(w + 1)),
            "rule": name,
            "action": action,
            "model_name": "churn",
            "model_version": version,
            "window_start": day(w),
            "window_end": day(w + 1),
            "breached_windows": 2,
            "considered_windows": 3,
            "evidence": "[]",
            "description": "",
        }
        for name, action, version, w in rows
    ]
    return pd.DataFrame(records, columns=FIRED_COLUMNS)


def test_resolve_actions_applies_the_policy_and_defaults_to_alert():
    fired = fired_frame(("psi", "retrain", "1", 3), ("auc", "rollback", "1", 3), ("gate", "block_promotion", "2", 3))
    resolved = resolve_actions(fired, {"rollback": "execute", "retrain": "alert"})
    assert resolved.columns.tolist() == RESOLVED_COLUMNS
    assert resolved[["rule", "mode", "status"]].values.tolist() == [
        ["psi", "alert", "alerted"],
        ["auc", "execute", "to_execute"],
        ["gate", "alert", "alerted"],
    ]
    assert resolved["blocked_reason"].isna().all()


def test_retrain_waits_for_fix_upstream_of_the_same_version():
    fired = fired_frame(("psi", "retrain", "1", 3), ("nulls", "fix_upstream", "1", 3), ("psi", "retrain", "2", 3))
    resolved = resolve_actions(fired, {"retrain": "execute"}).set_index(["rule", "model_version"])
    assert resolved.loc[("psi", "1"), "status"] == "blocked"
    assert resolved.loc[("psi", "1"), "blocked_reason"] == (
        "retraining waits until the upstream data is fixed: rule nulls fired"
    )
    assert resolved.loc[("psi", "1"), "mode"] == "execute"  # the policy is kept, the status says why not
    assert resolved.loc[("psi", "2"), "status"] == "to_execute"  # version 2's data was not flagged
    assert resolved.loc[("nulls", "1"), "status"] == "alerted"


def test_at_most_one_rollback_per_model_version():
    fired = fired_frame(
        ("b_auc", "rollback", "1", 3),
        ("a_drift", "rollback", "1", 3),
        ("c_late", "rollback", "1", 4),
        ("a_drift", "rollback", "2", 3),
    )
    resolved = resolve_actions(fired, {"rollback": "execute"})
    # version 1 keeps the latest window (c_late, window 4) and blocks the others; version 2 keeps its own
    assert resolved[["rule", "model_version", "status"]].values.tolist() == [
        ["b_auc", "1", "blocked"],
        ["a_drift", "1", "blocked"],
        ["c_late", "1", "to_execute"],
        ["a_drift", "2", "to_execute"],
    ]
    assert resolved["blocked_reason"][0] == (
        "at most one rollback per model version: rule c_late already rolls it back"
    )


def test_resolve_actions_rejects_unknown_modes_and_actions_and_handles_empty():
    fired = fired_frame(("psi", "retrain", "1", 3))
    with pytest.raises(ValueError, match=r"policy: mode of retrain is 'auto'; expected one of \['alert', 'execute'\]"):
        resolve_actions(fired, {"retrain": "auto"})
    with pytest.raises(ValueError, match=r"policy: action is 'retrian'"):
        resolve_actions(fired, {"retrian": "execute"})
    with pytest.raises(ValueError, match=r"fired: action holds \['page_oncall'\]"):
        resolve_actions(fired.assign(action="page_oncall"), {})
    empty = resolve_actions(fired_frame(), {"retrain": "execute"})
    assert empty.empty and empty.columns.tolist() == RESOLVED_COLUMNS
