"""Clean, canonical records per source: values drawn, delivery assigned, ids in time order."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._behaviour import Activity, Table
from ._config import DAY, DEVICES, PLANS, SimConfig
from ._population import Population


@dataclass(frozen=True)
class Records:
    """One source's clean records sorted by event time; record ``i`` has event id ``i + 1``."""

    columns: Table  # always cust (int), ts (seconds from start_date), delivery (int)

    @property
    def size(self) -> int:
        """Number of records."""
        return int(self.columns["ts"].size)


def _deliver(cfg: SimConfig, table: Table, backfill: bool = False) -> Records:
    """Assign each event to the first delivery after it, drop those outside the feed, sort."""
    ts = table["ts"]
    delivery = (ts - cfg.cutoff) // DAY + 1  # events before D 02:00 are in delivery D
    if backfill:
        # The first delivery is a snapshot of everything that existed before the feed began.
        delivery = np.maximum(delivery, 0)
    keep = np.flatnonzero((delivery >= 0) & (delivery < cfg.n_days))
    take = keep[np.lexsort((table["cust"][keep], ts[keep]))]
    columns = {name: col[take] for name, col in table.items()}
    columns["delivery"] = delivery[take].astype(np.int16)
    columns["cust"] = columns["cust"].astype(np.int32, copy=False)
    return Records(columns)


def currency_table(cfg: SimConfig, pop: Population) -> tuple[tuple[str, ...], np.ndarray]:
    """Currency names and each country's currency index (EUR unless configured otherwise)."""
    by_country = dict(cfg.population.get("currencies", {}))
    if cfg.new_country.enabled:
        options = cfg.new_country.options
        by_country.setdefault(str(options["country"]), str(options.get("currency", "EUR")))
    names = tuple(dict.fromkeys(["EUR", *cfg.population["fx_rates"], *by_country.values()]))
    index = np.array([names.index(by_country.get(c, "EUR")) for c in pop.countries], np.int8)
    return names, index


def order_records(cfg: SimConfig, pop: Population, activity: Activity, rng: np.random.Generator) -> Records:
    """Orders with basket size, amount (local currency), discount and price-shift drift."""
    rec = _deliver(cfg, activity.orders)
    c, act = rec.columns, cfg.activity
    n = rec.size
    # One child stream per column: record i's values do not depend on how many records exist,
    # so a drift that changes later activity leaves earlier records byte-identical.
    r_items, r_unit, r_disc, r_frac = rng.spawn(4)
    extra_items = np.array([float(act["extra_items_mean"][p]) for p in PLANS])[c["plan"]]
    items = 1 + r_items.poisson(extra_items)
    noise = float(act["unit_price_sigma"]) * r_unit.standard_normal(n)
    unit = float(act["unit_price_median"]) * np.exp(noise)
    names, index = currency_table(cfg, pop)
    fx = np.array([float(cfg.population["fx_rates"].get(name, 1.0)) for name in names])
    currency = index[pop.country[c["cust"]]]
    shift = float(cfg.price_shift.options.get("factor", 1.0))
    factor = np.where(cfg.price_shift.active(c["ts"]), shift, 1.0)
    amount = np.maximum(np.round(items * unit * fx[currency] * factor * 100), 100).astype(np.int64)
    discounted = r_disc.random(n) < float(act["discount_probability"])
    fraction = r_frac.uniform(0.05, float(act["discount_max_fraction"]), n)
    discount = np.where(discounted, np.round(amount * fraction), 0).astype(np.int64)
    c.update(items=items.astype(np.int16), amount=amount, discount=discount, currency=currency)
    del c["plan"]
    return rec


def session_records(cfg: SimConfig, pop: Population, activity: Activity, rng: np.random.Generator) -> Records:
    """Sessions: engaged customers stay longer and read more pages; some sessions bounce."""
    rec = _deliver(cfg, activity.sessions)
    c, act = rec.columns, cfg.activity
    n = rec.size
    r_dur, r_bounce, r_pages, r_own, r_device = rng.spawn(5)  # per-column streams, see orders
    log_duration = (
        np.log(float(act["session_median_seconds"]))
        + 0.3 * c.pop("engagement")
        + float(act["session_sigma"]) * r_dur.standard_normal(n)
    )
    bounce = r_bounce.random(n) < float(act["bounce_probability"])
    duration = np.where(bounce, 0, np.round(np.exp(log_duration))).astype(np.int32)
    pages = np.where(bounce, 1, 1 + r_pages.poisson(duration / 90.0)).astype(np.int16)
    # Mostly the customer's own device, sometimes another one.
    own = r_own.random(n) < 0.8
    device = np.where(own, pop.device[c["cust"]], r_device.integers(0, len(DEVICES), n))
    c.update(duration=duration, pages=pages, device=device.astype(np.int8))
    return rec


def ticket_records(cfg: SimConfig, activity: Activity) -> Records:
    """Tickets as simulated (category and severity were drawn inside the loop)."""
    return _deliver(cfg, activity.tickets)


def profile_records(cfg: SimConfig, activity: Activity) -> Records:
    """Customer change log: one state at signup, one per plan change or price increase."""
    return _deliver(cfg, activity.profiles, backfill=True)
