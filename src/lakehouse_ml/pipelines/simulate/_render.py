"""Turn planned lines into file text, one delivery at a time (called lazily by Kedro on save)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np

from ._config import CHANNELS, DAY, DEVICES, PLANS, TICKET_CATEGORIES, TICKET_SEVERITIES
from ._faults import BAD_TS, FUTURE_TS, MALFORMED, NEGATIVE, NULL_KEY, RESEND_ORIGINAL, Lines
from ._records import Records

# What real feeds send when a timestamp is broken.
BAD_TIMESTAMPS = ("13/45/2026 25:61", "yesterday", "2026-02-30T25:61:00Z", "N/A", "0000-00-00 00:00:00")
# Ticket routing teams, by category, for the extra CSV column.
AGENT_TEAMS = ("billing_ops", "logistics", "product_support", "tier1")

Columns = dict[str, list]


@dataclass(frozen=True)
class SourceSpec:
    """Static description of one landing source."""

    name: str
    id_prefix: str
    file_format: str  # "json" | "csv"
    fields: tuple[str, ...]
    numeric: frozenset[str]  # JSON fields written as numbers
    extra_field: str | None = None


ORDERS = SourceSpec(
    "orders",
    "ord-",
    "json",
    ("event_id", "customer_id", "event_ts", "amount", "currency", "items", "discount", "delivered_at"),
    frozenset({"amount", "items", "discount"}),
    "channel_ref",
)
SESSIONS = SourceSpec(
    "sessions",
    "ses-",
    "json",
    ("event_id", "customer_id", "event_ts", "duration_s", "pages", "device", "delivered_at"),
    frozenset({"duration_s", "pages"}),
)
CUSTOMERS = SourceSpec(
    "customers",
    "cus-",
    "csv",
    (
        "event_id",
        "customer_id",
        "event_ts",
        "signup_ts",
        "country",
        "channel",
        "plan_tier",
        "monthly_price",
        "delivered_at",
    ),
    frozenset(),
)
TICKETS = SourceSpec(
    "tickets",
    "tkt-",
    "csv",
    ("event_id", "customer_id", "event_ts", "category", "severity", "delivered_at"),
    frozenset(),
    "agent_team",
)


def iso(seconds: np.ndarray) -> list[str]:
    """Unix seconds as ISO-8601 UTC strings like ``2026-01-05T13:07:21Z``."""
    text = np.datetime_as_string(np.asarray(seconds, np.int64).astype("datetime64[s]"), unit="s")
    return [s + "Z" for s in text.tolist()]


def money(cents: np.ndarray) -> list[str]:
    """Cents as decimal strings with exactly two decimals."""
    return [f"{c / 100:.2f}" for c in np.asarray(cents).tolist()]


def _names(table: tuple[str, ...], index: np.ndarray) -> list[str]:
    """Vocabulary lookup for an index array."""
    return np.asarray(table, dtype=object)[index].tolist()


def _set(values: list, positions: np.ndarray, new: list | object) -> None:
    """Overwrite a few list entries (faults touch few lines, so a Python loop is fine)."""
    for j, pos in enumerate(positions.tolist()):
        values[pos] = new[j] if isinstance(new, list) else new


@dataclass(frozen=True)
class LandingRenderer:
    """Renders one source's file for a delivery day from records, lines and lookups."""

    spec: SourceSpec
    records: Records
    lines: Lines
    epoch: int
    delivered: np.ndarray  # int64 unix seconds of each delivery of this source
    extra_from: int | None
    lookups: dict[str, tuple[str, ...] | np.ndarray]

    def has_lines(self, day: int) -> bool:
        """Whether the delivery of ``day`` has at least one line."""
        return self.lines.bounds[day + 1] > self.lines.bounds[day]

    def __call__(self, day: int) -> str:
        """Full text of the file delivered on ``day``."""
        sel = self.lines.day(day)
        rec, fault, aux = self.lines.rec[sel], self.lines.fault[sel], self.lines.aux[sel]
        render = self.lines.render_day[sel].astype(np.int64)
        cols = self._common(rec, fault, aux, render)
        cols.update(getattr(self, f"_{self.spec.name}")(rec, fault, aux))
        fields = list(self.spec.fields)
        if self.spec.extra_field and self.extra_from is not None and day >= self.extra_from:
            cols[self.spec.extra_field] = self._extra(rec)
            fields.append(self.spec.extra_field)
        broken = np.flatnonzero(fault == MALFORMED)
        if self.spec.file_format == "json":
            return _json_text(cols, fields, self.spec.numeric, broken, aux)
        return _csv_text(cols, fields, broken, aux)

    def _common(self, rec: np.ndarray, fault: np.ndarray, aux: np.ndarray, render: np.ndarray) -> Columns:
        """event_id, customer_id, event_ts, delivered_at with key and timestamp faults."""
        c = self.records.columns
        event_id = [f"{self.spec.id_prefix}{i:08d}" for i in (rec + 1).tolist()]
        customer_id = self.lookups["customer_ids"][c["cust"][rec]].tolist()
        null = fault == NULL_KEY
        _set(event_id, np.flatnonzero(null & (aux < 0.5)), None)
        _set(customer_id, np.flatnonzero(null & (aux >= 0.5)), None)
        event_ts = iso(self.epoch + c["ts"][rec])
        future = np.flatnonzero(fault == FUTURE_TS)
        days_ahead = 1 + (aux[future] * 30).astype(np.int64)  # 1-30 days after delivered_at
        scatter = (rec[future].astype(np.int64) * 7919) % DAY  # a time of day per record
        seconds = self.delivered[render[future]] + days_ahead * DAY + scatter
        _set(event_ts, future, iso(seconds))
        bad = np.flatnonzero(fault == BAD_TS)
        _set(event_ts, bad, [BAD_TIMESTAMPS[int(a * len(BAD_TIMESTAMPS))] for a in aux[bad]])
        delivered_at = np.asarray(iso(self.delivered), dtype=object)[render].tolist()
        return {"event_id": event_id, "customer_id": customer_id, "event_ts": event_ts, "delivered_at": delivered_at}

    def _orders(self, rec: np.ndarray, fault: np.ndarray, aux: np.ndarray) -> Columns:
        """Amount, currency, items, discount; resend originals carry a wrong amount."""
        c = self.records.columns
        amount, discount = c["amount"][rec].copy(), c["discount"][rec].copy()
        wrong = fault == RESEND_ORIGINAL
        changed = np.round(amount * (0.7 + 0.6 * aux.astype(np.float64))).astype(np.int64)
        changed = np.where(changed == amount, amount + 137, changed)  # the value must differ
        amount = np.where(wrong, changed, amount)
        discount = np.minimum(discount, amount)
        amount = np.where(fault == NEGATIVE, -amount, amount)
        return {
            "amount": money(amount),
            "currency": _names(self.lookups["currencies"], c["currency"][rec]),
            "items": c["items"][rec].astype(str).tolist(),
            "discount": money(discount),
        }

    def _sessions(self, rec: np.ndarray, fault: np.ndarray, aux: np.ndarray) -> Columns:
        """Duration, pages, device; resend originals carry a wrong duration and page count."""
        c = self.records.columns
        wrong = fault == RESEND_ORIGINAL
        duration = c["duration"][rec] + wrong * (1 + (aux * 600).astype(np.int32))
        pages = c["pages"][rec] + wrong
        return {
            "duration_s": duration.astype(str).tolist(),
            "pages": pages.astype(str).tolist(),
            "device": _names(DEVICES, c["device"][rec]),
        }

    def _tickets(self, rec: np.ndarray, fault: np.ndarray, aux: np.ndarray) -> Columns:
        """Category and severity; resend originals carry a wrong severity."""
        c = self.records.columns
        severity = (c["severity"][rec] + (fault == RESEND_ORIGINAL)) % len(TICKET_SEVERITIES)
        return {
            "category": _names(TICKET_CATEGORIES, c["category"][rec]),
            "severity": _names(TICKET_SEVERITIES, severity),
        }

    def _customers(self, rec: np.ndarray, fault: np.ndarray, aux: np.ndarray) -> Columns:
        """Profile state; resend originals carry a wrongly attributed acquisition channel."""
        c, lk = self.records.columns, self.lookups
        cust = c["cust"][rec]
        shift = (fault == RESEND_ORIGINAL) * (1 + (aux * (len(CHANNELS) - 1)).astype(np.int64))
        channel = (lk["channel"][cust] + shift) % len(CHANNELS)
        return {
            "signup_ts": iso(self.epoch + lk["signup_ts"][cust]),
            "country": _names(lk["countries"], lk["country"][cust]),
            "channel": _names(CHANNELS, channel),
            "plan_tier": _names(PLANS, c["plan"][rec]),
            "monthly_price": money(c["price_cents"][rec]),
        }

    def _extra(self, rec: np.ndarray) -> list:
        """Values of the column that appears mid-stream (deterministic from the record)."""
        if self.spec.name == "orders":
            refs = [f"cmp-{r % 997:04d}" for r in rec.tolist()]
            _set(refs, np.flatnonzero(rec % 7 == 0), None)  # not every order has a campaign
            return refs
        return _names(AGENT_TEAMS, self.records.columns["category"][rec])


def _json_text(cols: Columns, fields: list[str], numeric: frozenset[str], broken: np.ndarray, aux: np.ndarray) -> str:
    """JSON lines; the values are generated (no quotes or backslashes), so no escaping needed."""
    tokens = [cols[f] if f in numeric else ["null" if v is None else f'"{v}"' for v in cols[f]] for f in fields]
    template = "{" + ",".join(f'"{f}":%s' for f in fields) + "}"
    lines = [template % row for row in zip(*tokens)]
    for pos in broken.tolist():  # a truncated object is never valid JSON
        line = lines[pos]
        lines[pos] = line[: max(1, int(len(line) * (0.3 + 0.6 * float(aux[pos]))))]
    return "\n".join(lines) + "\n"


def _csv_text(cols: Columns, fields: list[str], broken: np.ndarray, aux: np.ndarray) -> str:
    """CSV with header via the csv module (RFC 4180 quoting, ``\\n`` line ends); None is empty."""
    rows = [list(row) for row in zip(*(cols[f] for f in fields))]
    for pos in broken.tolist():  # wrong field count: two fields short, or one too many
        rows[pos] = rows[pos][:-2] if aux[pos] < 0.5 else [*rows[pos], "??"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(fields)
    writer.writerows(rows)
    return buffer.getvalue()
