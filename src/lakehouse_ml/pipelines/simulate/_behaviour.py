"""Day-by-day behaviour: engagement decays, shocks raise the churn hazard, churn stops activity.

The loop runs over days (not customers or events); every step is vectorised over customers and
events are materialised with ``np.repeat``. Churn is never written anywhere: it only shows up as
customers who stop ordering and (mostly) stop visiting.

The loop starts ``burn_in_days`` before the feed so the back-book reaches a steady state (some
customers churn before the first delivery, the rest are a realistic mix of fresh and fading).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._config import DAY, PLANS, TICKET_CATEGORIES, TICKET_SEVERITIES, SimConfig
from ._population import Population

Table = dict[str, np.ndarray]


@dataclass
class _Buffer:
    """Per-day chunks of one event type, concatenated once at the end."""

    chunks: list[Table] = field(default_factory=list)

    def add(self, **columns: np.ndarray) -> None:
        """Append one day's columns."""
        self.chunks.append(columns)

    def table(self) -> Table:
        """All chunks as one table of columns."""
        names = self.chunks[0].keys()
        return {name: np.concatenate([c[name] for c in self.chunks]) for name in names}


@dataclass
class _State:
    """Mutable per-customer state of the daily loop."""

    z: np.ndarray  # current log-engagement
    wobble: np.ndarray  # mean-reverting part: noise and ticket damage that heal over time
    decline: np.ndarray  # monotone part: accumulates after the disengagement onset
    plan: np.ndarray
    mult: np.ndarray  # cumulative personal price increases
    repriced: np.ndarray  # pays the price-shift drift's list prices
    churn_day: np.ndarray
    ticket_shock: np.ndarray
    price_shock: np.ndarray
    plan_shock: np.ndarray


@dataclass(frozen=True)
class _Rates:
    """Per-customer and per-category constants of the loop, computed once."""

    plan_orders: np.ndarray  # order multiplier by plan index
    country_orders: np.ndarray  # per customer
    country_tickets: np.ndarray  # per customer
    severity_p: np.ndarray
    severity_w: np.ndarray
    category_p: np.ndarray
    list_price: np.ndarray  # by plan index
    shift_factor: float


@dataclass(frozen=True)
class Activity:
    """Raw simulated events per entity, unsorted, with timestamps as offsets from start_date."""

    orders: Table  # cust, ts, plan
    sessions: Table  # cust, ts, engagement
    tickets: Table  # cust, ts, category, severity
    profiles: Table  # cust, ts, plan, price_cents (signup state, plan changes, price increases)
    churn_day: np.ndarray  # ground truth for diagnostics only, never written (n_days: not churned)


def _spread(
    rng: np.random.Generator, who: np.ndarray, counts: np.ndarray, lo: np.ndarray, hi: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expand per-customer counts into events at uniform times in ``[lo, hi)``."""
    pos = np.repeat(np.arange(who.size, dtype=np.int32), counts)  # int32: 10x scale is large
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


def _rates(cfg: SimConfig, pop: Population) -> _Rates:
    """Look-up tables of the loop."""
    act, ch = cfg.activity, cfg.churn
    return _Rates(
        plan_orders=np.array([float(act["plan_order_multiplier"][p]) for p in PLANS]),
        country_orders=_country_multipliers(cfg, pop, "order_rate_multiplier"),
        country_tickets=_country_multipliers(cfg, pop, "ticket_rate_multiplier"),
        severity_p=np.array([float(act["ticket_severity"][s]) for s in TICKET_SEVERITIES]),
        severity_w=np.array([float(ch["ticket_severity_weight"][s]) for s in TICKET_SEVERITIES]),
        category_p=np.array([float(act["ticket_category"][c]) for c in TICKET_CATEGORIES]),
        list_price=np.array([float(cfg.population["plan_prices"][p]) for p in PLANS]),
        shift_factor=float(cfg.price_shift.options.get("factor", 1.0)),
    )


def _price_cents(r: _Rates, st: _State, who: np.ndarray) -> np.ndarray:
    """Monthly price in cents: list price x personal increases x price-shift drift."""
    factor = np.where(st.repriced[who], r.shift_factor, 1.0)
    return np.round(r.list_price[st.plan[who]] * st.mult[who] * factor * 100).astype(np.int64)


def _initial_state(cfg: SimConfig, pop: Population, first_day: int) -> _State:
    """State at the start of the burn-in; long-tenured customers start part-way into decline."""
    n = pop.size
    decline = pop.decay * np.maximum(0.0, first_day - pop.onset)
    return _State(
        z=pop.engagement - decline,
        wobble=np.zeros(n),
        decline=decline,
        plan=pop.plan.copy(),
        mult=np.ones(n),
        repriced=cfg.price_shift.active(pop.signup_ts),
        churn_day=np.full(n, cfg.n_days, np.int32),
        ticket_shock=np.zeros(n),
        price_shock=np.zeros(n),
        plan_shock=np.zeros(n),
    )


def _visits(  # noqa: PLR0913 - the day's state is passed explicitly, never held in globals
    cfg: SimConfig,
    r: _Rates,
    st: _State,
    rng: np.random.Generator,
    live: np.ndarray,
    lo: np.ndarray,
    day: int,
    orders: _Buffer,
    sessions: _Buffer,
) -> None:
    """Orders and sessions of one day: both scale with engagement; churned customers trickle."""
    act = cfg.activity
    start, end = day * DAY, (day + 1) * DAY
    zl = st.z[live]
    exposure = (end - lo) / DAY  # the signup day is only partly active
    lam = float(act["orders_per_day"]) * np.exp(float(act["order_elasticity"]) * zl) * r.plan_orders[st.plan[live]]
    who, ts, _ = _spread(rng, live, rng.poisson(lam * r.country_orders[live] * exposure), lo, end)
    orders.add(cust=who, ts=ts, plan=st.plan[who])

    lam = float(act["sessions_per_day"]) * np.exp(float(act["session_elasticity"]) * zl)
    who, ts, pos = _spread(rng, live, rng.poisson(lam * exposure), lo, end)
    gone = np.flatnonzero(st.churn_day < day).astype(np.int32)
    trickle = float(act["sessions_per_day"]) * float(act["post_churn_session_factor"])
    counts = rng.poisson(trickle, gone.size)
    gwho, gts, _ = _spread(rng, gone, counts, np.full(gone.size, start), end)
    sessions.add(
        cust=np.concatenate([who, gwho]),
        ts=np.concatenate([ts, gts]),
        engagement=np.concatenate([zl[pos], st.z[gwho] - 1.0]).astype(np.float32),
    )


def _tickets(
    cfg: SimConfig,
    r: _Rates,
    st: _State,
    rng: np.random.Generator,
    live: np.ndarray,
    lo: np.ndarray,
    day: int,
    tickets: _Buffer,
) -> np.ndarray:
    """Tickets of one day (more from disengaged and repriced customers); returns weighted counts."""
    act = cfg.activity
    end = (day + 1) * DAY
    zl = st.z[live]
    lam = (
        float(act["tickets_per_day"])
        * (end - lo)
        / DAY
        * r.country_tickets[live]
        * (1.0 + float(act["low_engagement_ticket_boost"]) * _sigmoid(-2.0 * zl))
        * (1.0 + float(act["price_shock_ticket_boost"]) * st.price_shock[live])
    )
    who, ts, pos = _spread(rng, live, rng.poisson(lam), lo, end)
    severity = rng.choice(len(TICKET_SEVERITIES), who.size, p=r.severity_p)
    category = rng.choice(len(TICKET_CATEGORIES), who.size, p=r.category_p)
    # After a price increase, complaints are mostly about billing.
    billing = rng.random(who.size) < np.minimum(st.price_shock[who], 1.0) * 0.6
    category = np.where(billing, TICKET_CATEGORIES.index("billing"), category)
    tickets.add(cust=who, ts=ts, category=category.astype(np.int8), severity=severity.astype(np.int8))
    return np.bincount(pos, weights=r.severity_w[severity], minlength=live.size)


def _profile_changes(
    cfg: SimConfig,
    r: _Rates,
    st: _State,
    rng: np.random.Generator,
    live: np.ndarray,
    tenure: np.ndarray,
    day: int,
    profiles: _Buffer,
) -> None:
    """Plan moves and monthly price increases (never on the signup day); updates the shocks."""
    pc = cfg.plan_changes
    eligible = tenure > 0
    moving = eligible & (rng.random(live.size) < float(pc["daily_probability"]))
    up = rng.random(live.size) < _sigmoid(2.0 * st.z[live])  # engaged customers upgrade
    new_plan = np.clip(st.plan[live] + np.where(up, 1, -1), 0, len(PLANS) - 1)
    moved = moving & (new_plan != st.plan[live])
    # Billing anniversaries every 30 days: a personal increase, or the drift's new list price.
    anniversary = eligible & (tenure % 30 == 0)
    p_increase = float(pc["price_increase_monthly_probability"])
    increase = anniversary & (rng.random(live.size) < p_increase)
    shifting = cfg.price_shift.enabled and day * DAY >= cfg.price_shift.start
    reprice = (anniversary | moved) & shifting & ~st.repriced[live]
    changed = live[moved | increase | reprice]
    draws = rng.integers(0, DAY, changed.size)

    st.plan[live[moved]] = new_plan[moved]
    st.mult[live[increase]] *= float(pc["price_increase_factor"])
    st.repriced[live[reprice]] = True
    st.price_shock[live[increase | reprice]] += 1.0
    st.plan_shock[live[moved]] += 1.0
    if changed.size:
        profiles.add(
            cust=changed, ts=day * DAY + draws, plan=st.plan[changed].copy(), price_cents=_price_cents(r, st, changed)
        )


def _churn_and_evolve(
    cfg: SimConfig,
    st: _State,
    pop: Population,
    rng: np.random.Generator,
    live: np.ndarray,
    exposure: np.ndarray,
    hit: np.ndarray,
    day: int,
) -> None:
    """Draw today's churners from the hazard, then move engagement to tomorrow."""
    ch, eng = cfg.churn, cfg.engagement
    hazard = float(ch["base_daily_hazard"]) * np.exp(
        -float(ch["engagement_coef"]) * st.z[live]
        + float(ch["ticket_coef"]) * st.ticket_shock[live]
        + float(ch["price_shock_coef"]) * st.price_shock[live]
        + float(ch["plan_change_coef"]) * st.plan_shock[live]
    )
    hazard = np.minimum(hazard, float(ch["max_daily_hazard"])) * exposure
    st.churn_day[live[rng.random(live.size) < hazard]] = day

    # Engagement = baseline - decline + wobble; tickets hurt, and the hurt heals slowly.
    st.decline[live] += pop.decay[live] * (day >= pop.onset[live])
    st.wobble[live] = (
        st.wobble[live] * (1.0 - float(eng["reversion"]))
        + float(eng["daily_sd"]) * rng.standard_normal(live.size)
        - float(eng["ticket_hit"]) * hit
    )
    st.z[live] = pop.engagement[live] - st.decline[live] + st.wobble[live]


def simulate_activity(cfg: SimConfig, pop: Population, rng: np.random.Generator) -> Activity:
    """Run the daily loop from the burn-in to the last delivery day."""
    first_day = -1 - int(cfg.engagement["burn_in_days"])
    r = _rates(cfg, pop)
    st = _initial_state(cfg, pop, first_day)
    keep = 0.5 ** (1.0 / float(cfg.churn["shock_half_life_days"]))
    signup_day = pop.signup_ts // DAY
    orders, sessions, tickets, profiles = _Buffer(), _Buffer(), _Buffer(), _Buffer()
    everyone = np.arange(pop.size)
    profiles.add(cust=everyone, ts=pop.signup_ts.copy(), plan=st.plan.copy(), price_cents=_price_cents(r, st, everyone))

    for day in range(first_day, cfg.n_days):
        start, end = day * DAY, (day + 1) * DAY
        live = np.flatnonzero((pop.signup_ts < end) & (st.churn_day >= cfg.n_days)).astype(np.int32)
        lo = np.maximum(start, pop.signup_ts[live])
        for shock in (st.ticket_shock, st.price_shock, st.plan_shock):
            shock *= keep
        if day >= -1:  # earlier visits could never reach a delivery: skip generating them
            _visits(cfg, r, st, rng, live, lo, day, orders, sessions)
        hit = _tickets(cfg, r, st, rng, live, lo, day, tickets)
        st.ticket_shock[live] += hit
        _profile_changes(cfg, r, st, rng, live, day - signup_day[live], day, profiles)
        _churn_and_evolve(cfg, st, pop, rng, live, (end - lo) / DAY, hit, day)

    return Activity(orders.table(), sessions.table(), tickets.table(), profiles.table(), st.churn_day)
