"""Which line goes into which delivery file, and which fault (if any) each line carries.

Each clean record gets at most one fault, drawn from one categorical per record, so the count of
each fault is ~Binomial(n, rate) and faults never stack. Duplicates and corrected resends add
extra lines that point back at the same record.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._config import DAY, SimConfig
from ._records import Records

# Fault codes carried per line (int8).
NONE = 0
LATE = 1
FUTURE_TS = 2
BAD_TS = 3
NULL_KEY = 4
MALFORMED = 5
NEGATIVE = 6
DUP_ORIGINAL = 7  # rendered clean; a DUP_COPY repeats it byte for byte
RESEND_ORIGINAL = 8  # rendered with wrong values; a RESEND_COPY later carries the right ones
DUP_COPY = 9
RESEND_COPY = 10

_RATE_CODES = (
    ("late_arrivals", LATE),
    ("future_timestamps", FUTURE_TS),
    ("unparseable_timestamps", BAD_TS),
    ("null_keys", NULL_KEY),
    ("malformed_rows", MALFORMED),
    ("negative_amounts", NEGATIVE),
    ("exact_duplicates", DUP_ORIGINAL),
    ("corrected_resends", RESEND_ORIGINAL),
)


@dataclass(frozen=True)
class Lines:
    """Lines of one source sorted by (file, event time), with per-file boundaries."""

    rec: np.ndarray  # int32 record index
    render_day: np.ndarray  # int16 delivery whose delivered_at (and schema) the line carries
    fault: np.ndarray  # int8 fault code
    aux: np.ndarray  # float32 uniform draw that fixes the details of the fault
    bounds: np.ndarray  # int64, length n_days + 1

    def day(self, day: int) -> slice:
        """Slice of the lines delivered in file ``day``."""
        return slice(int(self.bounds[day]), int(self.bounds[day + 1]))


def _assign(cfg: SimConfig, n: int, rng: np.random.Generator, has_amounts: bool) -> np.ndarray:
    """One categorical draw per record: a fault code or NONE."""
    pairs = [(code, cfg.faults[name]) for name, code in _RATE_CODES if has_amounts or code != NEGATIVE]
    edges = np.cumsum([rate for _, rate in pairs])
    codes = np.array([code for code, _ in pairs] + [NONE], np.int8)
    return codes[np.searchsorted(edges, rng.random(n), side="right")]


def plan_lines(
    cfg: SimConfig,
    records: Records,
    rng: np.random.Generator,
    *,
    has_amounts: bool,
    has_extra: bool,
) -> Lines:
    """Decide file placement and faults for every line of one source."""
    n, last = records.size, cfg.n_days - 1
    delivery = records.columns["delivery"].astype(np.int32)  # small dtypes: 10x scale is large
    ts = records.columns["ts"]
    # One child stream per draw, each made for every record: record i's fault and its details
    # depend neither on the rates nor on how many records exist.
    r_fault, r_aux, r_lag, r_same, r_dup, r_resend = rng.spawn(6)
    fault = _assign(cfg, n, r_fault, has_amounts)
    aux = r_aux.random(n).astype(np.float32)
    lag = r_lag.integers(2, 11, n, dtype=np.int8)
    same_file = r_same.random(n, np.float32) < 0.5
    dup_step = np.where(same_file, 0, r_dup.integers(1, 4, n, dtype=np.int8))
    resend_step = r_resend.integers(1, 6, n, dtype=np.int8)

    # Late arrival: the event date is 2-10 days before the delivery date.
    file_day = delivery.copy()
    late_day = (ts // DAY).astype(np.int32) + lag
    late_ok = (fault == LATE) & (late_day > delivery) & (late_day <= last)
    file_day[late_ok] = late_day[late_ok]
    fault[(fault == LATE) & ~late_ok] = NONE

    # Resends need a later delivery inside the feed.
    resend_day = delivery + resend_step
    fault[(fault == RESEND_ORIGINAL) & (resend_day > last)] = NONE

    # Exact copies keep the original line's text, so they must not cross a schema change.
    dup_day = np.minimum(delivery + dup_step, last)
    if has_extra and cfg.extra_column_from is not None:
        crosses = (delivery < cfg.extra_column_from) & (dup_day >= cfg.extra_column_from)
        dup_day = np.where(crosses, delivery, dup_day)

    dups = np.flatnonzero(fault == DUP_ORIGINAL)
    resends = np.flatnonzero(fault == RESEND_ORIGINAL)
    rec = np.concatenate([np.arange(n, dtype=np.int32), dups, resends]).astype(np.int32)
    file_all = np.concatenate([file_day, dup_day[dups], resend_day[resends]])
    render = np.concatenate([file_day, delivery[dups], resend_day[resends]])
    codes = np.concatenate([fault, np.full(dups.size, DUP_COPY, np.int8), np.full(resends.size, RESEND_COPY, np.int8)])
    order = np.lexsort((np.arange(rec.size, dtype=np.int32), ts[rec], file_all))
    bounds = np.searchsorted(file_all[order], np.arange(cfg.n_days + 1))
    return Lines(
        rec=rec[order],
        render_day=render[order].astype(np.int16),
        fault=codes[order],
        aux=np.concatenate([aux, aux[dups], aux[resends]])[order],
        bounds=bounds.astype(np.int64),
    )
