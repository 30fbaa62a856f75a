"""Monitoring rules: turn signal rows (drift, performance, data quality) into actions that do not flap.

Pure pandas: the signal tables of one monitoring run are small (one row per window, model version,
slice, feature and metric), so the rules run on the driver.

Definitions:

* A **signal** row is one row of the long signal schema (``window_start``, ``window_end``,
  ``source``, ``model_name``, ``model_version``, ``slice``, ``slice_value``, ``feature``,
  ``metric``, ``value``, ``warn``, ``act``, ``status``, ...) plus ``table``, the monitoring table
  it comes from (``TABLES``).
* A row **matches** a rule when its table is the rule's table, its metric is one of the rule's
  ``metrics``, its feature one of ``features`` (``None``: any feature, a null feature included; a
  list may hold ``None`` to match whole-model rows), its ``slice`` one of ``slices`` (``'*'``: any)
  and its source one of ``sources`` (``None``: any).
* A matching row **breaches** when its status is at or above the rule's ``level`` in
  ``ok < warn < act``; ``no_data`` and ``untrusted`` never breach.
* The **windows** of a model version in a table are the distinct ``(window_start, window_end)``
  pairs of all its rows in that table, matching or not (a window holding only ``no_data`` rows is
  still a window: missing data must not make older breaches look recent), ordered by
  ``window_end`` then ``window_start``. With ``within_days_of_promotion = D`` only the windows
  with ``0 <= window_start - promotion day <= D`` days count (the promotion day is the calendar
  date of the promotion time, so the window in which the promotion happened counts), and a
  version without a promotion time never fires the rule.
* A window **breaches** when at least one of its matching rows breaches. The rule **fires** for a
  model version when, among its last ``of_last`` (K) windows, at least ``breaching_windows`` (N)
  breach **and** the latest one breaches: one bad window (a spike) is not enough, and a version
  that has recovered stops firing, so alternating windows (flapping) do not fire an N = K rule.
* ``action_id`` = ``uuid5(ACTION_NAMESPACE, "<rule>|<model_name>|<model_version>|<window_end>")``
  of the latest window: re-running monitoring on the same windows yields the same ids, so the
  actions table is merged on it without duplicates.
* **Evidence**: for each breaching window among the last K, its breaching-row count and up to
  ``EVIDENCE_ROWS`` worst breaching rows: highest status first, then the largest exceedance
  ``(value - warn) / (act - warn)`` (0 at ``warn``, 1 at ``act``, whichever direction the
  thresholds run: it ranks "AUC fell to 0.6" and "PSI rose to 0.4" alike), then by feature, slice,
  slice value, source and metric so that equal rows come out in a fixed order.

``resolve_actions`` then applies the policy (alert or execute each action) and blocks what must
not run: a retrain while ``fix_upstream`` fired for the same model version in the same evaluation
(retraining on broken data bakes the break in), and all but one rollback per model version.
"""

from __future__ import annotations

import copy
import json
import math
import uuid
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

import pandas as pd

ACTIONS = ("fix_upstream", "retrain", "rollback", "block_promotion")
TABLES = ("drift_metrics", "performance_metrics", "data_quality")
SCORING_SOURCES = ("batch", "online")  # where a scored row was served
LEVELS = ("warn", "act")
MODES = ("alert", "execute")
STATUS_RANK = {"ok": 0, "warn": 1, "act": 2, "no_data": -1, "untrusted": -1}
EVIDENCE_ROWS = 5
ANY_SLICE = "*"
# Fixed namespace of the action ids (uuid5 of a URL naming this module): never change it, or every
# action recorded so far gets a new id and re-runs duplicate them.
ACTION_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "lakehouse_ml/monitoring/actions")

RULE_DEFAULTS: dict[str, Any] = {
    "features": None,
    "slices": ["all"],
    "sources": None,
    "level": "act",
    "breaching_windows": 2,
    "of_last": 3,
    "within_days_of_promotion": None,
    "description": "",
}
REQUIRED_RULE_KEYS = ("name", "action", "table", "metrics")
RULE_KEYS = (*REQUIRED_RULE_KEYS, *RULE_DEFAULTS)
SIGNAL_COLUMNS = (
    "table",
    "window_start",
    "window_end",
    "source",
    "model_name",
    "model_version",
    "slice",
    "slice_value",
    "feature",
    "metric",
    "value",
    "warn",
    "act",
    "status",
)
EVIDENCE_FIELDS = ("feature", "slice", "slice_value", "source", "metric", "value", "warn", "act", "status")
FIRED_COLUMNS = [
    "action_id",
    "rule",
    "action",
    "model_name",
    "model_version",
    "window_start",
    "window_end",
    "breached_windows",
    "considered_windows",
    "evidence",
    "description",
]
RESOLVED_COLUMNS = [*FIRED_COLUMNS, "mode", "status", "blocked_reason"]
_WINDOW = ["window_start", "window_end"]
_VERSION = ["model_name", "model_version"]


# ---------------------------------------------------------------- rule validation


def _label(rule: Any, index: int) -> str:
    """How an error names a rule: by its name when it has one, else by its position."""
    if isinstance(rule, Mapping) and isinstance(rule.get("name"), str) and rule["name"]:
        return f"rule {rule['name']!r} (#{index})"
    return f"rule #{index}"


def _string_list(value: Any, label: str, field: str, allow_none_items: bool = False) -> list:
    """``value`` as a non-empty list of strings (a bare string is refused: it is not a list of one)."""
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"{label}: {field} is {value!r}; expected a non-empty list of strings")
    for item in value:
        if not (isinstance(item, str) or (allow_none_items and item is None)):
            expected = "strings or null" if allow_none_items else "strings"
            raise ValueError(f"{label}: {field} holds {item!r}; expected {expected}")
    return list(value)


def _count(value: Any, label: str, field: str, minimum: int) -> int:
    """``value`` as an int of at least ``minimum`` (booleans are refused: YAML turns 'yes' into True)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{label}: {field} is {value!r}; expected an integer >= {minimum}")
    return value


def _choice(value: Any, label: str, field: str, allowed: Sequence[str]) -> str:
    """``value`` when it is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{label}: {field} is {value!r}; expected one of {list(allowed)}")
    return value


def _validate_rule(raw: Any, index: int) -> dict[str, Any]:
    """One rule, checked and completed with the defaults."""
    label = _label(raw, index)
    if not isinstance(raw, Mapping):
        raise ValueError(f"{label}: is {type(raw).__name__}; expected a mapping of rule fields")
    unknown = sorted(set(raw) - set(RULE_KEYS), key=str)
    if unknown:
        raise ValueError(f"{label}: unknown field(s) {unknown}; expected only {list(RULE_KEYS)}")
    for key in REQUIRED_RULE_KEYS:
        if raw.get(key) is None:
            raise ValueError(f"{label}: missing required field {key!r}")
    rule = {**copy.deepcopy(RULE_DEFAULTS), **copy.deepcopy(dict(raw))}
    if not isinstance(rule["name"], str) or not rule["name"].strip():
        raise ValueError(f"{label}: name is {rule['name']!r}; expected a non-empty string")
    _choice(rule["action"], label, "action", ACTIONS)
    _choice(rule["table"], label, "table", TABLES)
    _choice(rule["level"], label, "level", LEVELS)
    rule["metrics"] = _string_list(rule["metrics"], label, "metrics")
    if rule["features"] is not None:
        rule["features"] = _string_list(rule["features"], label, "features", allow_none_items=True)
    rule["slices"] = _string_list(rule["slices"], label, "slices")
    if rule["sources"] is not None:
        rule["sources"] = _string_list(rule["sources"], label, "sources")
        for source in rule["sources"]:
            _choice(source, label, "sources item", SCORING_SOURCES)
    n = _count(rule["breaching_windows"], label, "breaching_windows", 1)
    _count(rule["of_last"], label, "of_last", n)  # K < N could never fire
    if rule["within_days_of_promotion"] is not None:
        _count(rule["within_days_of_promotion"], label, "within_days_of_promotion", 0)
    if rule["description"] is None:
        rule["description"] = ""
    if not isinstance(rule["description"], str):
        raise ValueError(f"{label}: description is {rule['description']!r}; expected a string")
    return rule


def validate_rules(rules: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Checked copies of the rules with defaults filled in; ValueError naming the rule and the field."""
    if isinstance(rules, (str, Mapping)) or not isinstance(rules, Sequence):
        raise ValueError(f"rules is {type(rules).__name__}; expected a list of rule mappings")
    checked: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(rules):
        rule = _validate_rule(raw, index)
        if rule["name"] in seen:
            raise ValueError(
                f"{_label(raw, index)}: name {rule['name']!r} is already used by rule #{seen[rule['name']]}; "
                "expected unique names (they key the actions)"
            )
        seen[rule["name"]] = index
        checked.append(rule)
    return checked


# ---------------------------------------------------------------- signals


def _as_dates(column: pd.Series, field: str) -> pd.Series:
    """A date column as ``datetime.date`` objects (Spark gives dates, pandas Timestamps, YAML strings)."""
    try:
        return pd.to_datetime(column).dt.date
    except (ValueError, TypeError) as error:
        raise ValueError(f"signals: {field} holds values that are not dates ({error}); expected dates") from error


def _check_signals(signals: pd.DataFrame) -> pd.DataFrame:
    """A copy of the signals with the needed columns present, keys non-null and known tables/statuses."""
    missing = [column for column in SIGNAL_COLUMNS if column not in signals.columns]
    if missing:
        raise ValueError(f"signals: missing column(s) {missing}; expected the signal schema plus 'table'")
    frame = signals.loc[:, list(SIGNAL_COLUMNS)].copy()
    for column in ("table", *_WINDOW, *_VERSION, "metric", "status"):
        if frame[column].isna().any():
            raise ValueError(f"signals: {column} is null in {int(frame[column].isna().sum())} row(s); expected a value")
    for column, allowed in (("table", TABLES), ("status", tuple(STATUS_RANK))):
        unknown = sorted(set(frame[column]) - set(allowed), key=str)
        if unknown:
            raise ValueError(f"signals: {column} holds {unknown}; expected one of {list(allowed)}")
    for column in _WINDOW:
        frame[column] = _as_dates(frame[column], column)
    for column in ("value", "warn", "act"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    frame["model_version"] = frame["model_version"].astype(str)
    return frame


def _matches(frame: pd.DataFrame, rule: Mapping[str, Any]) -> pd.Series:
    """Rows of ``frame`` (already the rule's table) that the rule looks at."""
    mask = frame["metric"].isin(rule["metrics"])
    if rule["features"] is not None:
        named = frame["feature"].isin([f for f in rule["features"] if f is not None])
        mask &= named | (frame["feature"].isna() if None in rule["features"] else False)
    if ANY_SLICE not in rule["slices"]:
        mask &= frame["slice"].isin(rule["slices"])
    if rule["sources"] is not None:
        mask &= frame["source"].isin(rule["sources"])
    return mask


def _breaches(frame: pd.DataFrame, level: str) -> pd.Series:
    """Rows whose status is at or above ``level`` (no_data and untrusted rank below ok)."""
    return frame["status"].map(STATUS_RANK) >= STATUS_RANK[level]


# ---------------------------------------------------------------- evaluation


def _promotion_day(promotions: Mapping[str, Any] | None, model_name: str, model_version: str) -> date | None:
    """The calendar day a version was promoted, keyed ``"<model_name>/<model_version>"`` or by version alone."""
    if not promotions:
        return None
    when = promotions.get(f"{model_name}/{model_version}", promotions.get(model_version))
    if when is None:
        return None
    if isinstance(when, datetime):
        return when.date()
    if isinstance(when, date):
        return when
    try:
        return pd.Timestamp(when).date()
    except (ValueError, TypeError) as error:
        raise ValueError(f"promotions[{model_name}/{model_version}] is {when!r}; expected a datetime") from error


def _windows(rows: pd.DataFrame, promoted: date | None, within_days: int | None) -> list[tuple[date, date]]:
    """The version's distinct windows in order, restricted to the post-promotion period when asked."""
    pairs = sorted(set(zip(rows["window_start"], rows["window_end"])), key=lambda w: (w[1], w[0]))
    if within_days is None:
        return pairs
    if promoted is None:
        return []
    return [w for w in pairs if 0 <= (w[0] - promoted).days <= within_days]


def _exceedance(row: pd.Series) -> float:
    """How far past its thresholds a row is: 0 at warn, 1 at act, in either direction (NaN if unknown)."""
    value, warn, act = row["value"], row["warn"], row["act"]
    if any(pd.isna(x) for x in (value, warn, act)) or act == warn:
        return math.nan
    return (value - warn) / (act - warn)


def _json_value(value: Any) -> Any:
    """A cell as JSON: NaN and None as null, numpy scalars as Python ones."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def _worst_rows(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Up to ``EVIDENCE_ROWS`` breaching rows of one window, worst first."""
    ranked = rows.assign(
        _rank=rows["status"].map(STATUS_RANK),
        _exceed=rows.apply(_exceedance, axis=1) if len(rows) else pd.Series(dtype=float),
        _feature=rows["feature"].fillna(""),
        _slice_value=rows["slice_value"].fillna("").astype(str),
        _source=rows["source"].fillna(""),
    ).sort_values(
        ["_rank", "_exceed", "_feature", "slice", "_slice_value", "_source", "metric"],
        ascending=[False, False, True, True, True, True, True],
        na_position="last",
        kind="mergesort",
    )
    return [
        {field: _json_value(record[field]) for field in EVIDENCE_FIELDS}
        for record in ranked.head(EVIDENCE_ROWS).to_dict("records")
    ]


def _evidence(breaching: pd.DataFrame, windows: Sequence[tuple[date, date]]) -> str:
    """JSON list of the breaching windows (oldest first), each with its worst rows."""
    items = []
    for start, end in windows:
        rows = breaching[(breaching["window_start"] == start) & (breaching["window_end"] == end)]
        items.append(
            {
                "window_start": start.isoformat(),
                "window_end": end.isoformat(),
                "breaching_rows": len(rows),
                "rows": _worst_rows(rows),
            }
        )
    return json.dumps(items)


def action_id(rule: str, model_name: str, model_version: str, window_end: date) -> str:
    """The deterministic id of a firing: uuid5 of ``rule|model_name|model_version|window_end``."""
    return str(uuid.uuid5(ACTION_NAMESPACE, f"{rule}|{model_name}|{model_version}|{window_end.isoformat()}"))


def _fire(rule: Mapping[str, Any], rows: pd.DataFrame, promoted: date | None) -> dict[str, Any] | None:
    """The firing of one rule for one model version's rows of the rule's table, or None."""
    considered = _windows(rows, promoted, rule["within_days_of_promotion"])[-rule["of_last"] :]
    if not considered:
        return None
    breaching = rows[_matches(rows, rule) & _breaches(rows, rule["level"])]
    breached = set(zip(breaching["window_start"], breaching["window_end"]))
    hits = [w for w in considered if w in breached]
    latest = considered[-1]
    if len(hits) < rule["breaching_windows"] or latest not in breached:
        return None
    model_name, model_version = rows["model_name"].iloc[0], rows["model_version"].iloc[0]
    return {
        "action_id": action_id(rule["name"], model_name, model_version, latest[1]),
        "rule": rule["name"],
        "action": rule["action"],
        "model_name": model_name,
        "model_version": model_version,
        "window_start": latest[0],
        "window_end": latest[1],
        "breached_windows": len(hits),
        "considered_windows": len(considered),
        "evidence": _evidence(breaching, hits),
        "description": rule["description"],
    }


def _fired_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """The firings as a frame with ``FIRED_COLUMNS`` (and int counts even when empty)."""
    frame = pd.DataFrame(records, columns=FIRED_COLUMNS)
    return frame.astype({"breached_windows": "int64", "considered_windows": "int64"})


def evaluate_rules(
    signals: pd.DataFrame,
    rules: Sequence[Mapping[str, Any]],
    *,
    promotions: Mapping[str, datetime] | None = None,
) -> pd.DataFrame:
    """One row per rule firing for a model version (``FIRED_COLUMNS``); see the module docstring.

    ``promotions`` maps ``"<model_name>/<model_version>"`` (or the bare version) to its promotion
    time; only rules with ``within_days_of_promotion`` use it.
    """
    checked = validate_rules(rules)
    frame = _check_signals(signals)
    records = []
    for rule in checked:
        table_rows = frame[frame["table"] == rule["table"]]
        for (model_name, model_version), rows in table_rows.groupby(_VERSION, sort=True):
            promoted = _promotion_day(promotions, model_name, model_version)
            fired = _fire(rule, rows, promoted)
            if fired is not None:
                records.append(fired)
    return _fired_frame(records)


# ---------------------------------------------------------------- policy


def _check_policy(policy: Mapping[str, str]) -> None:
    """Policy keys are known actions and values known modes."""
    for action, mode in policy.items():
        _choice(action, "policy", "action", ACTIONS)
        _choice(mode, "policy", f"mode of {action}", MODES)


def _blocked_retrains(frame: pd.DataFrame) -> dict[int, str]:
    """Retrains of a model version for which fix_upstream fired, by row index, with the reason."""
    upstream = frame[frame["action"] == "fix_upstream"].groupby(_VERSION)["rule"].agg(lambda r: sorted(set(r)))
    reasons: dict[int, str] = {}
    for index, row in frame[frame["action"] == "retrain"].iterrows():
        rules = upstream.get((row["model_name"], row["model_version"]))
        if rules:
            reasons[index] = "retraining waits until the upstream data is fixed: " + ", ".join(
                f"rule {name} fired" for name in rules
            )
    return reasons


def _extra_rollbacks(frame: pd.DataFrame) -> dict[int, str]:
    """All rollbacks of a model version but one (latest window, then rule name), by row index."""
    rollbacks = frame[frame["action"] == "rollback"].sort_values(
        ["window_end", "rule"], ascending=[False, True], kind="mergesort"
    )
    reasons: dict[int, str] = {}
    for _, group in rollbacks.groupby(_VERSION, sort=False):
        kept = group["rule"].iloc[0]
        for index in group.index[1:]:
            reasons[index] = f"at most one rollback per model version: rule {kept} already rolls it back"
    return reasons


def resolve_actions(fired: pd.DataFrame, policy: Mapping[str, str]) -> pd.DataFrame:
    """The firings with ``mode`` (policy, default alert), ``status`` and ``blocked_reason``.

    ``status`` is ``alerted`` (mode alert), ``to_execute`` (mode execute) or ``blocked``: a retrain
    while fix_upstream fired for the same model version in this evaluation, or a second rollback of
    one model version (only one is kept: the latest window, then the first rule name).
    """
    _check_policy(policy)
    missing = [column for column in FIRED_COLUMNS if column not in fired.columns]
    if missing:
        raise ValueError(f"fired: missing column(s) {missing}; expected the output of evaluate_rules")
    unknown = sorted(set(fired["action"]) - set(ACTIONS), key=str)
    if unknown:
        raise ValueError(f"fired: action holds {unknown}; expected one of {list(ACTIONS)}")
    frame = fired.reset_index(drop=True).copy()
    frame["mode"] = frame["action"].map(lambda action: policy.get(action, "alert"))
    frame["status"] = frame["mode"].map({"alert": "alerted", "execute": "to_execute"})
    frame["blocked_reason"] = pd.Series([None] * len(frame), dtype=object)
    for index, reason in {**_blocked_retrains(frame), **_extra_rollbacks(frame)}.items():
        frame.loc[index, ["status", "blocked_reason"]] = ["blocked", reason]
    return frame[[*fired.columns, *[c for c in ("mode", "status", "blocked_reason") if c not in fired.columns]]]
