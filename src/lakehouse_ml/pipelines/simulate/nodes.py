"""Simulate a subscription e-commerce business and deliver its data as daily landing files.

The simulation is deterministic: every random draw comes from ``numpy.random.default_rng``
seeded with ``(seed, stream)``, one stream per concern, so identical parameters give
byte-identical files. Files are returned as lazy callables (Kedro's PartitionedDataset calls
them one at a time on save), so only one file's text is in memory at once.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ._behaviour import simulate_activity
from ._config import DAY, SimConfig, parse_config
from ._faults import plan_lines
from ._population import Population, build_population
from ._records import (
    Records,
    currency_table,
    order_records,
    profile_records,
    session_records,
    ticket_records,
)
from ._render import CUSTOMERS, ORDERS, SESSIONS, TICKETS, LandingRenderer, SourceSpec

logger = logging.getLogger(__name__)

Partitions = dict[str, Callable[[], str]]

# Independent random streams: adding draws to one concern never shifts another's numbers.
_STREAMS = {
    "population": 1,
    "behaviour": 2,
    "orders": 3,
    "sessions": 4,
    "delivery": 5,
    "faults.orders": 11,
    "faults.sessions": 12,
    "faults.customers": 13,
    "faults.tickets": 14,
}


def _rng(cfg: SimConfig, stream: str) -> np.random.Generator:
    """The generator of one named stream."""
    return np.random.default_rng([cfg.seed, _STREAMS[stream]])


def _partitions(cfg: SimConfig, spec: SourceSpec, records: Records, lookups: dict[str, Any], offset: int) -> Partitions:
    """Plan lines and faults for one source and wrap each non-empty delivery in a callable."""
    lines = plan_lines(
        cfg,
        records,
        _rng(cfg, f"faults.{spec.name}"),
        has_amounts=spec.name == "orders",
        has_extra=spec.extra_field is not None,
    )
    # Files land shortly after the cutoff; each source has its own jitter per day.
    jitter = 1 + _rng(cfg, "delivery").integers(0, cfg.jitter, (4, cfg.n_days))[offset]
    delivered = cfg.epoch + np.arange(cfg.n_days, dtype=np.int64) * DAY + cfg.cutoff + jitter
    renderer = LandingRenderer(
        spec=spec,
        records=records,
        lines=lines,
        epoch=cfg.epoch,
        delivered=delivered,
        extra_from=cfg.extra_column_from if spec.extra_field else None,
        lookups=lookups,
    )
    return {
        f"{cfg.delivery_date(day)}/{spec.name}": functools.partial(renderer, day)
        for day in range(cfg.n_days)
        if renderer.has_lines(day)
    }


def _lookups(cfg: SimConfig, pop: Population) -> dict[str, Any]:
    """Per-customer and vocabulary lookups the renderers need."""
    currencies, _ = currency_table(cfg, pop)
    return {
        "currencies": currencies,
        "countries": pop.countries,
        "country": pop.country,
        "channel": pop.channel,
        "signup_ts": pop.signup_ts,
        "customer_ids": np.array([f"c-{i + 1:06d}" for i in range(pop.size)], dtype=object),
    }


def simulate_business(
    params: Mapping[str, Any],
) -> tuple[Partitions, Partitions, Partitions, Partitions]:
    """Simulate the business; return lazy landing files of orders, sessions, customers, tickets
    (none when ``enabled`` is false: the loop then runs on the files delivered there)."""
    if not params.get("enabled", True):
        logger.info("simulate: disabled (simulate.enabled: false): the loop runs on the delivered landing files")
        return {}, {}, {}, {}
    cfg = parse_config(params)
    pop = build_population(cfg, _rng(cfg, "population"))
    activity = simulate_activity(cfg, pop, _rng(cfg, "behaviour"))
    records = {
        ORDERS: order_records(cfg, pop, activity, _rng(cfg, "orders")),
        SESSIONS: session_records(cfg, pop, activity, _rng(cfg, "sessions")),
        CUSTOMERS: profile_records(cfg, activity),
        TICKETS: ticket_records(cfg, activity),
    }
    lookups = _lookups(cfg, pop)
    orders, sessions, customers, tickets = (
        _partitions(cfg, spec, recs, lookups, offset) for offset, (spec, recs) in enumerate(records.items())
    )
    return orders, sessions, customers, tickets
