"""Who the customers are: signup time, country, channel, starting plan and latent engagement."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ._config import CHANNELS, DAY, DEVICES, PLANS, SimConfig


@dataclass(frozen=True)
class Population:
    """Static customer attributes; index ``i`` is customer ``c-{i+1:06d}`` (ids follow signup)."""

    signup_ts: np.ndarray  # int64, seconds from start_date (negative: existed before the feed)
    country: np.ndarray  # int16 index into ``countries``
    channel: np.ndarray  # int8 index into CHANNELS
    plan: np.ndarray  # int8 index into PLANS at signup
    device: np.ndarray  # int8 preferred device
    engagement: np.ndarray  # float64 initial log-engagement
    decay: np.ndarray  # float64 per-day fall of log-engagement once the decline started
    onset: np.ndarray  # float64 day (from start_date) the decline starts
    countries: tuple[str, ...]

    @property
    def size(self) -> int:
        """Number of customers."""
        return int(self.signup_ts.size)


def _probs(shares: Mapping[str, float], names: tuple[str, ...]) -> np.ndarray:
    """Normalised probability vector over ``names`` (missing names get 0)."""
    p = np.array([float(shares.get(name, 0.0)) for name in names])
    return p / p.sum()


def _signup_times(cfg: SimConfig, rng: np.random.Generator) -> np.ndarray:
    """Sorted signup offsets: a back-book before the feed starts plus signups during it."""
    n_existing = int(round(cfg.n_customers * cfg.existing_share))
    first_window = -DAY + cfg.cutoff  # earliest event time that lands in delivery 0
    existing = first_window - 1 - rng.integers(0, cfg.max_prior_tenure_days * DAY, n_existing)
    last_window = (cfg.n_days - 1) * DAY + cfg.cutoff  # end of the last delivery's window
    new = rng.integers(first_window, last_window, cfg.n_customers - n_existing)
    return np.sort(np.concatenate([existing, new]).astype(np.int64), kind="stable")


def build_population(cfg: SimConfig, rng: np.random.Generator) -> Population:
    """Draw all customers; drift scenarios change who signs up after their start date."""
    pop, eng = cfg.population, cfg.engagement
    signup = _signup_times(cfg, rng)
    n = signup.size

    countries = tuple(pop["countries"])
    # Drift draws happen whether or not a scenario is enabled, so enabling one leaves the
    # random stream (and thus everything before its start date) unchanged.
    country = rng.choice(len(countries), n, p=_probs(pop["countries"], countries))
    moved_draw = rng.random(n)
    is_new = np.zeros(n, bool)
    if cfg.new_country.enabled:
        extra = str(cfg.new_country.options["country"])
        if extra not in countries:
            countries = (*countries, extra)
        share = float(cfg.new_country.options.get("signup_share", 0.2))
        is_new = cfg.new_country.active(signup) & (moved_draw < share)
        country = np.where(is_new, countries.index(extra), country)

    channel = rng.choice(len(CHANNELS), n, p=_probs(pop["channels"], CHANNELS))
    mix_shares = cfg.channel_mix.options.get("shares", pop["channels"])
    shifted = rng.choice(len(CHANNELS), n, p=_probs(mix_shares, CHANNELS))
    mixed = cfg.channel_mix.active(signup)
    channel = np.where(mixed, shifted, channel)

    plan = rng.choice(len(PLANS), n, p=_probs(pop["plans"], PLANS))
    device = rng.choice(len(DEVICES), n, p=_probs(pop["devices"], DEVICES))

    # Latent engagement: channel/country quality, noise, and an optional back-book bonus (the
    # burn-in already makes survivors of the back-book the more engaged ones).
    by_channel, by_country = eng.get("channel_shift") or {}, eng.get("country_shift") or {}
    channel_shift = np.array([float(by_channel.get(c, 0.0)) for c in CHANNELS])
    country_shift = np.array([float(by_country.get(c, 0.0)) for c in countries])
    z = (
        float(eng["initial_mean"])
        + channel_shift[channel]
        + country_shift[country]
        + float(eng["initial_sd"]) * rng.standard_normal(n)
        + float(eng["existing_bonus"]) * (signup < 0)
    )
    z = z + float(cfg.new_country.options.get("engagement_shift", 0.0)) * is_new
    z = z + float(cfg.channel_mix.options.get("engagement_shift", 0.0)) * mixed

    # Customers are stable until a disengagement onset, then fade at their own (gamma) rate:
    # the weeks before churn show a falling trend that trailing-window features can pick up.
    onset = signup // DAY + rng.exponential(float(eng["decline_onset_mean_days"]), n)
    shape = float(eng["decline_rate_shape"])
    decay = rng.gamma(shape, float(eng["decline_rate_mean"]) / shape, n)
    return Population(
        signup_ts=signup,
        country=country.astype(np.int16),
        channel=channel.astype(np.int8),
        plan=plan.astype(np.int8),
        device=device.astype(np.int8),
        engagement=z,
        decay=decay,
        onset=onset,
        countries=countries,
    )
