"""Typed view of ``params:simulate``: validated once, so the simulation code can trust it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

DAY = 86_400
PLANS = ("basic", "standard", "premium")  # ordered: up/downgrades move one step
CHANNELS = ("organic", "paid_search", "social", "referral", "partner")
DEVICES = ("web", "ios", "android")
TICKET_CATEGORIES = ("billing", "delivery", "product", "account")
TICKET_SEVERITIES = ("low", "medium", "high")
FAULTS = (
    "exact_duplicates",
    "corrected_resends",
    "late_arrivals",
    "null_keys",
    "malformed_rows",
    "unparseable_timestamps",
    "future_timestamps",
    "negative_amounts",
)


@dataclass(frozen=True)
class Drift:
    """One drift scenario: active for events at or after ``start`` (seconds from start_date)."""

    enabled: bool
    start: int
    options: Mapping[str, Any]

    def active(self, ts: np.ndarray) -> np.ndarray:
        """Boolean mask of timestamps (seconds from start_date) the scenario applies to."""
        return np.asarray(ts) >= self.start if self.enabled else np.zeros(np.shape(ts), bool)


@dataclass(frozen=True)
class SimConfig:
    """Everything the simulator needs, with dates turned into day/second offsets."""

    seed: int
    start_date: dt.date
    n_days: int
    n_customers: int
    existing_share: float
    max_prior_tenure_days: int
    cutoff: int  # seconds after midnight at which a delivery's extract is cut
    jitter: int  # max seconds between cutoff and the file's delivered_at
    population: Mapping[str, Any]
    engagement: Mapping[str, Any]
    activity: Mapping[str, Any]
    plan_changes: Mapping[str, Any]
    churn: Mapping[str, Any]
    faults: Mapping[str, float]
    extra_column_from: int | None  # delivery index from which the extra column appears
    price_shift: Drift
    new_country: Drift
    channel_mix: Drift

    @property
    def epoch(self) -> int:
        """Unix seconds of start_date 00:00 UTC; all internal times are offsets from it."""
        start = dt.datetime.combine(self.start_date, dt.time(), tzinfo=dt.timezone.utc)
        return int(start.timestamp())

    def delivery_date(self, day: int) -> str:
        """ISO date of delivery index ``day``."""
        return (self.start_date + dt.timedelta(days=day)).isoformat()


def _as_date(value: Any) -> dt.date:
    """Accept ``date``/``datetime`` objects or ISO strings (YAML loaders differ)."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))


def _day_offset(value: Any, start: dt.date) -> int:
    """A day offset from start_date, given either as an int or as a date."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    return (_as_date(value) - start).days


def _drift(raw: Mapping[str, Any] | None, start: dt.date) -> Drift:
    """Parse one drift block; a missing block means disabled."""
    raw = dict(raw or {})
    enabled = bool(raw.pop("enabled", False))
    begin = _day_offset(raw.pop("start_date", start), start) * DAY
    return Drift(enabled=enabled, start=begin, options=raw)


def _shares(raw: Mapping[str, float], allowed: tuple[str, ...] | None, what: str) -> None:
    """Fail early on share tables with unknown keys or that do not sum to a positive number."""
    if allowed is not None and not set(raw) <= set(allowed):
        raise ValueError(f"simulate: {what} keys must be within {allowed}, got {sorted(raw)}")
    if sum(float(v) for v in raw.values()) <= 0 or min(float(v) for v in raw.values()) < 0:
        raise ValueError(f"simulate: {what} shares must be non-negative with a positive sum")


def parse_config(params: Mapping[str, Any]) -> SimConfig:
    """Validate ``params:simulate`` and derive the offsets the simulator works with."""
    start = _as_date(params["start_date"])
    n_days = int(params["n_days"])
    n_customers = int(round(float(params["n_customers"]) * float(params.get("scale", 1.0))))
    if n_days < 1 or n_customers < 1:
        raise ValueError("simulate: n_days and n_customers * scale must be >= 1")

    faults_raw = dict(params.get("faults") or {})
    extra_enabled = bool(faults_raw.pop("extra_column", 0))
    extra_from = faults_raw.pop("extra_column_from", None)
    faults = {name: float(faults_raw.pop(name, 0.0)) for name in FAULTS}
    if faults_raw:
        raise ValueError(f"simulate.faults: unknown keys {sorted(faults_raw)}")
    if any(rate < 0 for rate in faults.values()) or sum(faults.values()) > 1:
        raise ValueError("simulate.faults: rates must be >= 0 and sum to at most 1")

    population = params["population"]
    _shares(population["countries"], None, "population.countries")
    _shares(population["channels"], CHANNELS, "population.channels")
    _shares(population["plans"], PLANS, "population.plans")
    _shares(population["devices"], DEVICES, "population.devices")

    drift = params.get("drift") or {}
    channel_mix = _drift(drift.get("channel_mix"), start)
    if channel_mix.enabled:
        _shares(channel_mix.options["shares"], CHANNELS, "drift.channel_mix.shares")
    delivery = params.get("delivery") or {}
    cutoff = int(float(delivery.get("cutoff_hour", 2)) * 3600)
    jitter = int(delivery.get("jitter_seconds", 900))
    if not 0 <= cutoff < DAY - jitter or jitter < 1:
        raise ValueError("simulate.delivery: need 0 <= cutoff_hour < 24 and jitter_seconds >= 1")
    return SimConfig(
        seed=int(params["seed"]),
        start_date=start,
        n_days=n_days,
        n_customers=n_customers,
        existing_share=float(params["existing_customer_share"]),
        max_prior_tenure_days=int(params["max_prior_tenure_days"]),
        cutoff=cutoff,
        jitter=jitter,
        population=population,
        engagement=params["engagement"],
        activity=params["activity"],
        plan_changes=params["plan_changes"],
        churn=params["churn"],
        faults=faults,
        extra_column_from=(_day_offset(extra_from if extra_from is not None else 0, start) if extra_enabled else None),
        price_shift=_drift(drift.get("price_shift"), start),
        new_country=_drift(drift.get("new_country"), start),
        channel_mix=channel_mix,
    )
