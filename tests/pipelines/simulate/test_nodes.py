"""Checks of the simulated landing feed that a person could verify by hand (no Spark needed)."""

from __future__ import annotations

import copy
import csv
import datetime as dt
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from statistics import mean
from typing import Any

import pytest
import yaml

from lakehouse_ml.pipelines.simulate import create_pipeline
from lakehouse_ml.pipelines.simulate.nodes import simulate_business

PARAMS_FILE = Path(__file__).resolve().parents[3] / "conf" / "base" / "parameters_simulate.yml"
SOURCES = ("orders", "sessions", "customers", "tickets")
CANONICAL = {
    "orders": ["event_id", "customer_id", "event_ts", "amount", "currency", "items", "discount", "delivered_at"],
    "sessions": ["event_id", "customer_id", "event_ts", "duration_s", "pages", "device", "delivered_at"],
    "customers": [
        "event_id",
        "customer_id",
        "event_ts",
        "signup_ts",
        "country",
        "channel",
        "plan_tier",
        "monthly_price",
        "delivered_at",
    ],
    "tickets": ["event_id", "customer_id", "event_ts", "category", "severity", "delivered_at"],
}
ISO = "%Y-%m-%dT%H:%M:%SZ"
NO_FAULTS = {
    "exact_duplicates": 0,
    "corrected_resends": 0,
    "late_arrivals": 0,
    "null_keys": 0,
    "malformed_rows": 0,
    "unparseable_timestamps": 0,
    "future_timestamps": 0,
    "negative_amounts": 0,
    "extra_column": 0,
}
START = dt.date(2026, 1, 1)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _merge(base: dict, override: dict) -> dict:
    """Deep-merge ``override`` into a copy of ``base``."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def make_params(**override: Any) -> dict:
    """The project's parameters shrunk to a tiny business, with overrides."""
    base = yaml.safe_load(PARAMS_FILE.read_text())["simulate"]
    tiny = {"n_customers": 200, "n_days": 20, "start_date": START.isoformat(), "scale": 1.0}
    return _merge(_merge(base, tiny), override)


def materialise(params: dict) -> dict[str, dict[str, str]]:
    """Run the node and call every lazy partition: source -> partition id -> text."""
    outputs = simulate_business(params)
    return {
        source: {pid: (text() if callable(text) else text) for pid, text in parts.items()}
        for source, parts in zip(SOURCES, outputs)
    }


@cache
def _cached(key: str) -> dict[str, dict[str, str]]:
    """Materialised feed for a JSON-encoded parameter override (shared across tests)."""
    return materialise(make_params(**json.loads(key)))


def feed(**override: Any) -> dict[str, dict[str, str]]:
    """Cached materialised feed for the given overrides."""
    return _cached(json.dumps(override, sort_keys=True))


@dataclass(frozen=True)
class Row:
    """One record line of a landing file; ``fields`` is None when the line does not parse."""

    source: str
    day: int  # delivery index of the file it is in
    raw: str
    fields: dict | None
    header: tuple[str, ...] | None = None


def rows(texts: dict[str, dict[str, str]], source: str) -> list[Row]:
    """All record lines of a source in delivery order (CSV header lines excluded)."""
    out: list[Row] = []
    for pid in sorted(texts[source]):
        day = (dt.date.fromisoformat(pid.split("/")[0]) - START).days
        text = texts[source][pid]
        lines = text.split("\n")
        assert lines[-1] == "", "files end with a newline"
        lines = lines[:-1]
        if source in ("orders", "sessions"):
            for line in lines:
                try:
                    out.append(Row(source, day, line, json.loads(line)))
                except json.JSONDecodeError:
                    out.append(Row(source, day, line, None))
        else:
            header = tuple(next(csv.reader([lines[0]])))
            for line in lines[1:]:
                values = next(csv.reader([line]))
                ok = len(values) == len(header)
                fields = dict(zip(header, (v if v != "" else None for v in values))) if ok else None
                out.append(Row(source, day, line, fields, header))
    return out


def ts(value: str | None) -> dt.datetime | None:
    """Parse a canonical timestamp, None when it is not one."""
    try:
        return dt.datetime.strptime(value, ISO) if value else None
    except ValueError:
        return None


def all_rows(texts: dict[str, dict[str, str]]) -> list[Row]:
    """Record lines of every source."""
    return [row for source in SOURCES for row in rows(texts, source)]


# Detectors: which lines show each fault, judged only from the files.


def _first_seen(records: list[Row]) -> dict[str, int]:
    """First delivery in which each event id appears."""
    first: dict[str, int] = {}
    for r in records:
        if r.fields and r.fields.get("event_id"):
            first.setdefault(f"{r.source}:{r.fields['event_id']}", r.day)
    return first


def detect(texts: dict[str, dict[str, str]]) -> dict[str, list[Row]]:
    """Lines exhibiting each fault type."""
    records = all_rows(texts)
    first = _first_seen(records)
    by_id: dict[str, set[str]] = defaultdict(set)
    for r in records:
        if r.fields and r.fields.get("event_id"):
            by_id[f"{r.source}:{r.fields['event_id']}"].add(r.raw)
    line_counts = Counter((r.source, r.raw) for r in records)
    hits: dict[str, list[Row]] = defaultdict(list)
    for r in records:
        if r.fields is None:
            hits["malformed_rows"].append(r)
            continue
        f = r.fields
        if not f.get("event_id") or not f.get("customer_id"):
            hits["null_keys"].append(r)
        event, delivered = ts(f["event_ts"]), ts(f["delivered_at"])
        if event is None:
            hits["unparseable_timestamps"].append(r)
        elif event > delivered:
            hits["future_timestamps"].append(r)
        elif (
            (delivered.date() - event.date()).days >= 2
            and not (r.source == "customers" and r.day == 0)  # back-book snapshot
            and first.get(f"{r.source}:{f.get('event_id')}") == r.day
        ):
            hits["late_arrivals"].append(r)
        if r.source == "orders" and float(f["amount"]) < 0:
            hits["negative_amounts"].append(r)
        if line_counts[(r.source, r.raw)] > 1:
            hits["exact_duplicates"].append(r)
        if f.get("event_id") and len(by_id[f"{r.source}:{f['event_id']}"]) > 1:
            hits["corrected_resends"].append(r)
    return hits


# ---------------------------------------------------------------------------------------------
# contract
# ---------------------------------------------------------------------------------------------


def test_pipeline_outputs_exactly_the_four_landing_datasets():
    pipe = create_pipeline()
    assert pipe.outputs() == {
        "orders_landing@text",
        "sessions_landing@text",
        "customers_landing@text",
        "tickets_landing@text",
    }
    assert pipe.inputs() == {"params:simulate"}
    [node] = pipe.nodes
    assert node.name == "simulate.simulate_business"
    assert "simulate" in node.tags


def test_partition_ids_are_delivery_dates_and_only_non_empty_files():
    texts = feed()
    for source in SOURCES:
        assert texts[source], source
        for pid, text in texts[source].items():
            assert re.fullmatch(rf"\d{{4}}-\d{{2}}-\d{{2}}/{source}", pid), pid
            day = (dt.date.fromisoformat(pid[:10]) - START).days
            assert 0 <= day < 20
            header_lines = 1 if source in ("customers", "tickets") else 0
            assert text.count("\n") > header_lines, f"{pid} has no records"
    # Sessions are the most numerous source and arrive every day.
    assert len(texts["sessions"]) == 20
    assert sum(t.count("\n") for t in texts["sessions"].values()) > sum(t.count("\n") for t in texts["orders"].values())


def test_same_seed_gives_identical_text_and_other_seed_differs():
    first = materialise(make_params())
    second = materialise(make_params())
    assert first == second
    other = materialise(make_params(seed=7))
    assert other["orders"] != first["orders"]
    assert other["sessions"] != first["sessions"]


def test_clean_feed_is_canonical_when_all_faults_are_zero():
    texts = feed(faults=NO_FAULTS)
    assert not detect(texts), "no fault may appear when every rate is zero"
    for source in SOURCES:
        records = rows(texts, source)
        ids = [r.fields["event_id"] for r in records]
        assert len(ids) == len(set(ids)), f"{source}: event ids are unique in a clean feed"
        for r in records:
            assert r.fields is not None and list(r.fields) == CANONICAL[source]
            event, delivered = ts(r.fields["event_ts"]), ts(r.fields["delivered_at"])
            assert event < delivered
            assert delivered.date() == START + dt.timedelta(days=r.day)
            assert delivered.hour == 2  # delivered at 02:00 + jitter
            if not (source == "customers" and r.day == 0):
                assert (delivered.date() - event.date()).days in (0, 1)
            assert re.fullmatch(r"c-\d{6}", r.fields["customer_id"])


def test_clean_values_are_in_range():
    texts = feed(faults=NO_FAULTS)
    for r in rows(texts, "orders"):
        f = r.fields
        assert f["amount"] > 0 and 0 <= f["discount"] <= f["amount"]
        assert round(f["amount"], 2) == f["amount"] and f["items"] >= 1
        assert f["currency"] in {"EUR", "GBP", "USD"}
        assert re.search(r'"amount":-?\d+\.\d\d,', r.raw)  # two decimals as written
    for r in rows(texts, "sessions"):
        assert r.fields["duration_s"] >= 0 and r.fields["pages"] >= 1
        assert r.fields["device"] in {"web", "ios", "android"}
    for r in rows(texts, "tickets"):
        assert r.fields["category"] in {"billing", "delivery", "product", "account"}
        assert r.fields["severity"] in {"low", "medium", "high"}
    customers = rows(texts, "customers")
    for r in customers:
        f = r.fields
        assert f["country"] in {"DE", "FR", "NL", "ES", "IT", "GB", "US"}
        assert f["channel"] in {"organic", "paid_search", "social", "referral", "partner"}
        assert f["plan_tier"] in {"basic", "standard", "premium"}
        assert float(f["monthly_price"]) > 0
        assert ts(f["signup_ts"]) <= ts(f["event_ts"])
    backbook = [r for r in customers if r.day == 0 and ts(r.fields["signup_ts"]).date() < START]
    assert backbook, "customers that existed before the feed arrive in the first delivery"
    assert min(ts(r.fields["signup_ts"]) for r in backbook) < dt.datetime(2025, 1, 1)


def test_no_churn_label_anywhere():
    texts = feed()
    for source in SOURCES:
        for text in texts[source].values():
            assert "churn" not in text.lower()


def test_customer_change_log_has_later_states_for_the_same_customer():
    texts = feed(n_customers=500, n_days=60, faults=NO_FAULTS)
    by_customer = defaultdict(list)
    for r in rows(texts, "customers"):
        by_customer[r.fields["customer_id"]].append(r.fields)
    changed = {c: states for c, states in by_customer.items() if len(states) > 1}
    assert changed, "plan changes / price increases produce new rows"
    for states in changed.values():
        assert len({s["signup_ts"] for s in states}) == 1
        assert len({(s["plan_tier"], s["monthly_price"]) for s in states}) > 1


def test_scale_multiplies_the_customer_count():
    def customers(scale: float) -> int:
        texts = feed(faults=NO_FAULTS, scale=scale)
        return len({r.fields["customer_id"] for r in rows(texts, "customers")})

    assert customers(3.0) == 3 * customers(1.0) == 600


def test_rates_summing_above_one_are_rejected():
    params = make_params(faults={"null_keys": 0.6, "malformed_rows": 0.6})
    with pytest.raises(ValueError, match="faults"):
        simulate_business(params)


# ---------------------------------------------------------------------------------------------
# faults
# ---------------------------------------------------------------------------------------------

FAULT_NAMES = [name for name in NO_FAULTS if name != "extra_column"]


@pytest.mark.parametrize("fault", FAULT_NAMES)
def test_each_fault_appears_alone_when_its_rate_is_high(fault):
    texts = feed(faults={**NO_FAULTS, fault: 0.1})
    hits = detect(texts)
    assert hits.get(fault), f"{fault} must appear at rate 0.1"
    assert set(hits) == {fault}, f"only {fault} may appear, got {sorted(hits)}"


def test_malformed_count_matches_rate():
    texts = feed(faults={**NO_FAULTS, "malformed_rows": 0.1})
    for source in ("orders", "sessions"):
        records = rows(texts, source)
        share = sum(r.fields is None for r in records) / len(records)
        assert share == pytest.approx(0.1, abs=0.03), source
    for r in rows(texts, "tickets"):
        if r.fields is None:
            assert len(next(csv.reader([r.raw]))) != len(r.header)


def test_null_keys_are_json_null_and_empty_csv_fields():
    texts = feed(faults={**NO_FAULTS, "null_keys": 0.2})

    def has_null_key(r: Row) -> bool:
        return None in (r.fields["event_id"], r.fields["customer_id"])

    json_nulls = [r for r in rows(texts, "sessions") if has_null_key(r)]
    assert json_nulls and all('":null' in r.raw for r in json_nulls)
    csv_nulls = [r for r in rows(texts, "tickets") if has_null_key(r)]
    assert csv_nulls and all(r.raw.startswith(",") or ",," in r.raw for r in csv_nulls)


def test_corrected_resends_come_later_with_other_values():
    texts = feed(faults={**NO_FAULTS, "corrected_resends": 0.1})
    for source, field in (
        ("orders", "amount"),
        ("sessions", "duration_s"),
        ("tickets", "severity"),
        ("customers", "channel"),
    ):
        versions = defaultdict(list)
        for r in rows(texts, source):
            versions[r.fields["event_id"]].append(r)
        resent = [v for v in versions.values() if len(v) > 1]
        assert resent, source
        for first, *later in resent:
            assert len(later) == 1
            [second] = later
            assert second.day > first.day
            assert ts(second.fields["delivered_at"]) > ts(first.fields["delivered_at"])
            assert second.fields["event_ts"] == first.fields["event_ts"]
            assert second.fields[field] != first.fields[field], source


def test_exact_duplicates_repeat_the_line_in_same_or_later_delivery():
    texts = feed(faults={**NO_FAULTS, "exact_duplicates": 0.1})
    copies = defaultdict(list)
    for r in rows(texts, "sessions"):
        copies[r.raw].append(r.day)
    days = [d for d in copies.values() if len(d) > 1]
    assert any(d[0] == d[1] for d in days) and any(d[1] > d[0] for d in days)


def test_late_arrivals_are_two_to_ten_days_old():
    texts = feed(faults={**NO_FAULTS, "late_arrivals": 0.1})
    late = detect(texts)["late_arrivals"]
    lags = {(ts(r.fields["delivered_at"]).date() - ts(r.fields["event_ts"]).date()).days for r in late}
    assert lags <= set(range(2, 11)) and len(lags) > 3


def test_future_and_unparseable_timestamps():
    texts = feed(faults={**NO_FAULTS, "future_timestamps": 0.05, "unparseable_timestamps": 0.05})
    hits = detect(texts)
    for r in hits["future_timestamps"]:
        assert ts(r.fields["event_ts"]) - ts(r.fields["delivered_at"]) >= dt.timedelta(days=1)
    bad = {r.fields["event_ts"] for r in hits["unparseable_timestamps"]}
    assert "yesterday" in bad or "13/45/2026 25:61" in bad


def test_extra_column_appears_from_its_date_on():
    texts = feed(faults={**NO_FAULTS, "extra_column": 1, "extra_column_from": "2026-01-11"})
    for r in rows(texts, "orders"):
        expected = CANONICAL["orders"] + (["channel_ref"] if r.day >= 10 else [])
        assert list(r.fields) == expected
    for pid, text in texts["tickets"].items():
        header = text.split("\n", 1)[0].split(",")
        day = (dt.date.fromisoformat(pid[:10]) - START).days
        assert header == CANONICAL["tickets"] + (["agent_team"] if day >= 10 else [])
    for source in ("sessions", "customers"):
        for r in rows(texts, source):
            assert list(r.fields) == CANONICAL[source]


def test_default_faults_are_small_but_present():
    texts = feed(n_customers=1000, n_days=40)
    hits = detect(texts)
    assert set(hits) == set(FAULT_NAMES)
    total = len(all_rows(texts))
    assert sum(len(v) for v in hits.values()) < 0.1 * total


# ---------------------------------------------------------------------------------------------
# drift
# ---------------------------------------------------------------------------------------------

DRIFT_DAY = 15
DRIFT_START = (START + dt.timedelta(days=DRIFT_DAY)).isoformat()


def _by_period(records: list[Row], key: str = "event_ts") -> tuple[list[dict], list[dict]]:
    """Records before / from the drift start, by a timestamp field."""
    cut = dt.datetime.combine(START + dt.timedelta(days=DRIFT_DAY), dt.time())
    before = [r.fields for r in records if ts(r.fields[key]) < cut]
    after = [r.fields for r in records if ts(r.fields[key]) >= cut]
    return before, after


def test_price_shift_raises_amounts_and_prices_by_the_factor():
    drift = {"price_shift": {"enabled": True, "start_date": DRIFT_START, "factor": 1.25}}
    base = feed(n_customers=1500, n_days=30, faults=NO_FAULTS)
    shifted = feed(n_customers=1500, n_days=30, faults=NO_FAULTS, drift=drift)
    # Same world before the drift starts.
    assert _by_period(rows(base, "orders"))[0] == _by_period(rows(shifted, "orders"))[0]
    before, after = _by_period(rows(shifted, "orders"))
    ratio = mean(o["amount"] for o in after) / mean(o["amount"] for o in before)
    assert ratio == pytest.approx(1.25, abs=0.08)
    _, base_after = _by_period(rows(base, "orders"))
    base_ratio = mean(o["amount"] for o in base_after) / mean(o["amount"] for o in before)
    assert base_ratio == pytest.approx(1.0, abs=0.08)
    _, profiles_after = _by_period(rows(shifted, "customers"))
    new_rows = [f for f in profiles_after if f["signup_ts"] == f["event_ts"]]
    list_prices = {"basic": 9.99, "standard": 19.99, "premium": 34.99}
    assert new_rows and all(float(f["monthly_price"]) == round(list_prices[f["plan_tier"]] * 1.25, 2) for f in new_rows)


def test_new_country_only_signs_up_after_its_start():
    drift = {"new_country": {"enabled": True, "start_date": DRIFT_START, "signup_share": 0.3}}
    texts = feed(n_customers=1500, n_days=30, faults=NO_FAULTS, drift=drift)
    before, after = _by_period(rows(texts, "customers"), key="signup_ts")
    assert not any(f["country"] == "PL" for f in before)
    share = mean(f["country"] == "PL" for f in after if f["signup_ts"] == f["event_ts"])
    assert share == pytest.approx(0.3, abs=0.08)
    polish = {f["customer_id"] for f in after if f["country"] == "PL"}
    currencies = {o.fields["currency"] for o in rows(texts, "orders") if o.fields["customer_id"] in polish}
    assert currencies == {"PLN"}


def test_channel_mix_shifts_acquisition_to_paid_search():
    drift = {"channel_mix": {"enabled": True, "start_date": DRIFT_START}}
    texts = feed(n_customers=1500, n_days=30, faults=NO_FAULTS, drift=drift)
    signups = [r for r in rows(texts, "customers") if r.fields["signup_ts"] == r.fields["event_ts"]]
    before, after = _by_period(signups, key="signup_ts")
    paid_before = mean(f["channel"] == "paid_search" for f in before)
    paid_after = mean(f["channel"] == "paid_search" for f in after)
    assert paid_before == pytest.approx(0.25, abs=0.05)
    assert paid_after == pytest.approx(0.60, abs=0.08)


# ---------------------------------------------------------------------------------------------
# behaviour: churn emerges from activity
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow  # a 3,000-customer, 120-day feed
def test_churn_emerges_from_behaviour():
    """Customers who stop ordering were visiting less, fading and complaining more beforehand."""
    texts = feed(n_customers=3000, n_days=120, faults=NO_FAULTS)
    counts = defaultdict(lambda: defaultdict(Counter))  # source -> customer -> day -> events
    for source in ("orders", "sessions", "tickets"):
        for r in rows(texts, source):
            day = (ts(r.fields["event_ts"]).date() - START).days
            counts[source][r.fields["customer_id"]][day] += 1
    signup_day = {
        r.fields["customer_id"]: (ts(r.fields["signup_ts"]).date() - START).days for r in rows(texts, "customers")
    }

    def n(source: str, customer: str, lo: int, hi: int) -> int:
        return sum(v for d, v in counts[source][customer].items() if lo <= d < hi)

    def avg(group: list[str], source: str, lo: int, hi: int) -> float:
        return mean(n(source, c, lo, hi) for c in group)

    # Cohort: back-book customers ordering in days 30-59. Outcome: any order in days 75-119.
    active = [c for c in counts["orders"] if signup_day[c] < 0 and n("orders", c, 30, 60) > 0]
    gone = [c for c in active if n("orders", c, 75, 120) == 0]
    stayed = [c for c in active if n("orders", c, 75, 120) > 0]
    assert len(gone) > 60 and len(stayed) > 300
    # Lower level and a falling trend of visits before the cutoff (day 60).
    assert avg(gone, "sessions", 30, 60) < 0.6 * avg(stayed, "sessions", 30, 60)
    gone_trend = avg(gone, "sessions", 45, 60) / avg(gone, "sessions", 30, 45)
    stayed_trend = avg(stayed, "sessions", 45, 60) / avg(stayed, "sessions", 30, 45)
    assert gone_trend < stayed_trend - 0.08
    # More support tickets before the cutoff.
    assert avg(gone, "tickets", 0, 60) > 1.1 * avg(stayed, "tickets", 0, 60)
    # After they stop ordering they mostly stop visiting too.
    assert avg(gone, "sessions", 90, 120) < 0.5 * avg(gone, "sessions", 30, 60)


def _auc(scores: list[float], labels: list[bool]) -> float:
    """Rank AUC (Mann-Whitney) with ties counted half."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


@pytest.mark.slow  # a 3,000-customer, 120-day feed
def test_point_in_time_leakage_inflates_offline_metrics():
    """Sessions before a cutoff predict "no order in 30 days"; peeking past it scores higher."""
    texts = feed(n_customers=3000, n_days=120, faults=NO_FAULTS)
    orders, sessions = defaultdict(Counter), defaultdict(Counter)
    for source, target in (("orders", orders), ("sessions", sessions)):
        for r in rows(texts, source):
            target[r.fields["customer_id"]][(ts(r.fields["event_ts"]).date() - START).days] += 1

    def n(counter: Counter, lo: int, hi: int) -> int:
        return sum(v for d, v in counter.items() if lo <= d < hi)

    cutoff = 60
    active = [c for c in orders if n(orders[c], cutoff - 30, cutoff) > 0]
    label = [n(orders[c], cutoff, cutoff + 30) == 0 for c in active]
    honest = _auc([-n(sessions[c], cutoff - 30, cutoff) for c in active], label)
    leaky = _auc([-n(sessions[c], cutoff - 15, cutoff + 15) for c in active], label)
    assert 0.65 < honest < 0.95
    assert leaky > honest + 0.03
