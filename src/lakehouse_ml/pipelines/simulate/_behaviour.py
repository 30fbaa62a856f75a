"""Day-by-day behaviour: engagement decays, shocks raise the churn hazard, churn stops activity.

The loop runs over days (not customers or events); every step is vectorised over customers and
events are materialised with ``np.repeat``. Churn is never written anywhere: it only shows up as
customers who stop ordering and (mostly) stop visiting.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._config import DAY, PLANS, TICKET_CATEGORIES, TICKET_SEVERITIES, SimConfig
from ._population import Population

Table = dict[str, np.ndarray]


@dataclass
class _Buffer:
    """Per-day chunks of one event type, concatenated once at the end."""

    chunks: list[Table]

    def add(self, **columns: np.ndarray) -> None:
        """Append one day's columns."""
        self.chunks.append(columns)

    def table(self) -> Table:
        """All chunks as one table of columns."""
        names = self.chunks[0].keys()
        return {name: np.concatenate([c[name] for c in self.chunks]) for name in names}


@dataclass(frozen=True)
class Activity:
    """Raw simulated events per entity, unsorted, with timestamps as offsets from start_date."""

    orders: Table  # cust, ts, plan
    sessions: Table  # cust, ts, engagement, churned
    tickets: Table  # cust, ts, category, severity
    profiles: Table  # cust, ts, plan, price_cents (plan changes and price increases)
    churn_day: np.ndarray  # ground truth for diagnostics only, never written (-1: not churned)


def _spread(
    rng: np.random.Generator, who: np.ndarray, counts: np.ndarray, lo: np.ndarray, hi: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expand per-customer counts into events at uniform times in ``[lo, hi)``."""
    pos = np.repeat(np.arange(who.size), counts)
    ts = lo[pos] + (rng.random(pos.size) * (hi - lo[pos])).astype(np.int64)
    return who[pos], ts, pos


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function."""
    return 1.0 / (1.0 + np.exp(-x))


def _country_multipliers(cfg: SimConfig, pop: Population, key: str) -> np.ndarray:
    """Per-customer activity multiplier; only the drift's new country deviates from 1."""
    mult = np.ones(len(pop.countries))
    if cfg.new_country.enabled:
        mult[pop.countries.index(str(cfg.new_country.options["country"]))] = float(
            cfg.new_country.options.get(key, 1.0)
        )
    return mult[pop.country]


def _price_cents(cfg: SimConfig, plan: np.ndarray, mult: np.ndarray, repriced: np.ndarray) -> np.ndarray:
    """Monthly price in cents from list price, personal increases and the price-shift drift."""
    list_price = np.array([float(cfg.population["plan_prices"][p]) for p in PLANS])
    factor = np.where(repriced, float(cfg.price_shift.options.get("factor", 1.0)), 1.0)
    return np.round(list_price[plan] * mult * factor * 100).astype(np.int64)


def simulate_activity(cfg: SimConfig, pop: Population, rng: np.random.Generator) -> Activity:
    """Run the daily loop from the day before start_date to the last delivery day."""
    act, pc, ch = cfg.activity, cfg.plan_changes, cfg.churn
    n = pop.size
    z = pop.engagement.copy()
    plan = pop.plan.copy()
    mult = np.ones(n)  # cumulative personal price increases
    repriced = cfg.price_shift.active(pop.signup_ts)  # signed up at shifted list prices
    churned = np.zeros(n, bool)
    churn_day = np.full(n, -1, np.int32)
    ticket_shock, price_shock, plan_shock = np.zeros(n), np.zeros(n), np.zeros(n)
    keep = 0.5 ** (1.0 / float(ch["shock_half_life_days"]))
    signup_day = pop.signup_ts // DAY
    order_mult = np.array([float(act["plan_order_multiplier"][p]) for p in PLANS])[pop.plan]
    order_mult = order_mult * _country_multipliers(cfg, pop, "order_rate_multiplier")
    ticket_mult = _country_multipliers(cfg, pop, "ticket_rate_multiplier")
    severity_p = np.array([float(act["ticket_severity"][s]) for s in TICKET_SEVERITIES])
    severity_w = np.array([float(ch["ticket_severity_weight"][s]) for s in TICKET_SEVERITIES])
    category_p = np.array([float(act["ticket_category"][c]) for c in TICKET_CATEGORIES])
    orders, sessions, tickets, profiles = (_Buffer([]) for _ in range(4))

    profiles.add(
        cust=np.arange(n), ts=pop.signup_ts.copy(), plan=plan.copy(),
        price_cents=_price_cents(cfg, plan, mult, repriced),
    )
    for day in range(-1, cfg.n_days):
        start, end = day * DAY, (day + 1) * DAY
        live = np.flatnonzero((pop.signup_ts < end) & ~churned)
        lo = np.maximum(start, pop.signup_ts[live])  # signup day is only partly active
        exposure = (end - lo) / DAY
        zl = z[live]
        eng = np.exp(zl)

        # Orders scale with engagement; the plan multiplier is fixed at signup on purpose
        # (habit), while the plan recorded on the order is the current one.
        k = rng.poisson(float(act["orders_per_day"]) * eng * order_mult[live] * exposure)
        who, ts, pos = _spread(rng, live, k, lo, end)
        orders.add(cust=who, ts=ts, plan=plan[who])

        # Sessions: live customers plus a trickle from churned ones ("mostly stop").
        k = rng.poisson(float(act["sessions_per_day"]) * eng ** float(act["session_elasticity"]) * exposure)
        who, ts, pos = _spread(rng, live, k, lo, end)
        gone = np.flatnonzero(churned)
        kg = rng.poisson(float(act["sessions_per_day"]) * float(act["post_churn_session_factor"]), gone.size)
        gwho, gts, _ = _spread(rng, gone, kg, np.full(gone.size, start, np.int64), end)
        sessions.add(
            cust=np.concatenate([who, gwho]),
            ts=np.concatenate([ts, gts]),
            engagement=np.concatenate([zl[pos], z[gwho] - 1.0]).astype(np.float32),
        )

        # Tickets come more from disengaged customers and right after price increases.
        lam = (
            float(act["tickets_per_day"]) * exposure * ticket_mult[live]
            * (1.0 + float(act["low_engagement_ticket_boost"]) * _sigmoid(-2.0 * zl))
            * (1.0 + float(act["price_shock_ticket_boost"]) * price_shock[live])
        )
        who, ts, pos = _spread(rng, live, rng.poisson(lam), lo, end)
        severity = rng.choice(3, who.size, p=severity_p)
        category = rng.choice(4, who.size, p=category_p)
        billing = rng.random(who.size) < np.minimum(price_shock[who], 1.0) * 0.6
        category = np.where(billing, 0, category)
        tickets.add(cust=who, ts=ts, category=category.astype(np.int8), severity=severity.astype(np.int8))
        hit = np.bincount(pos, weights=severity_w[severity], minlength=live.size)

        # Profile changes, only after the signup day: plan moves and monthly price increases.
        tenure = day - signup_day[live]
        eligible = tenure > 0
        moving = eligible & (rng.random(live.size) < float(pc["daily_probability"]))
        up = rng.random(live.size) < _sigmoid(2.0 * zl)  # engaged customers upgrade
        new_plan = np.clip(plan[live] + np.where(up, 1, -1), 0, len(PLANS) - 1)
        moved = moving & (new_plan != plan[live])
        anniversary = eligible & (tenure % 30 == 0)
        increase = anniversary & (rng.random(live.size) < float(pc["price_increase_monthly_probability"]))
        shift_now = cfg.price_shift.enabled and start >= cfg.price_shift.start
        reprice = (anniversary | moved) & shift_now & ~repriced[live]
        changed = moved | increase | reprice
        idx = live[changed]
        plan[live[moved]] = new_plan[moved]
        mult[live[increase]] *= float(pc["price_increase_factor"])
        repriced[live[reprice]] = True
        if idx.size:
            ts = start + rng.integers(0, DAY, idx.size)  # tenure > 0: always after signup
            profiles.add(cust=idx, ts=ts, plan=plan[idx].copy(),
                         price_cents=_price_cents(cfg, plan[idx], mult[idx], repriced[idx]))

        # Shocks decay with a half-life; the hazard combines them with engagement.
        ticket_shock *= keep
        price_shock *= keep
        plan_shock *= keep
        ticket_shock[live] += hit
        price_shock[live[increase | reprice]] += 1.0
        plan_shock[live[moved]] += 1.0
        hazard = float(ch["base_daily_hazard"]) * np.exp(
            -float(ch["engagement_coef"]) * zl
            + float(ch["ticket_coef"]) * ticket_shock[live]
            + float(ch["price_shock_coef"]) * price_shock[live]
            + float(ch["plan_change_coef"]) * plan_shock[live]
        )
        hazard = np.minimum(hazard, float(ch["max_daily_hazard"])) * exposure
        leaving = live[rng.random(live.size) < hazard]
        churned[leaving] = True
        churn_day[leaving] = day

        # Engagement drifts down, with noise, and takes a hit from each ticket.
        z[live] = (
            zl - pop.decay[live]
            + float(cfg.engagement["daily_sd"]) * rng.standard_normal(live.size)
            - float(cfg.engagement["ticket_hit"]) * hit
        )

    return Activity(orders.table(), sessions.table(), tickets.table(), profiles.table(), churn_day)
