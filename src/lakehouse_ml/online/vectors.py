"""Online feature vectors: the training set's lookups answered from the online store at request time.

The definitions are the training set's own: :func:`feature_lookups` builds the same
``FeatureLookup`` per table from the contracts and the resolved lookups
(``training_set.lookup_defaults`` and ``lookups``: features, lookback window = the tightest freshness
unless configured, ``filter_by_ingested_at``), and the point-in-time rules are applied to the one
stored row per key:

- a stored row is used at time ``at`` only if ``feature_ts <= at`` (and, when filtering by
  ingestion time, ``ingested_at <= at``) and ``feature_ts >= at - lookback_window``
  (both inclusive, as in :mod:`lakehouse_ml.features.lookup`); otherwise the table's columns are
  null, exactly as a point-in-time lookup that finds no eligible row gives;
- no value is imputed (the model's pipeline imputes per contract, as in training);
- on-demand features (``on_demand_features``, e.g. ``tenure_days``) are computed as of ``at`` by
  the definition the training set and batch inference compute them by (:mod:`lakehouse_ml.features.on_demand`);
- every row's problems are judged by batch inference's rules (:mod:`lakehouse_ml.features.rules`,
  compiled to Arrow here and to Spark there), with the same wording
  (``<table>.<feature>: <rule> expected <promise>, got <value>``).

When the store was published as of time T (``publish_online.as_of``), ``vectors(ids, T, ...)``
equals the offline point-in-time vectors at cutoff T (tested). A store row newer than ``at`` (a
store published after ``at``) cannot stand for the older row a point-in-time lookup would find:
the table's columns are then null and the row is flagged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from lakehouse_ml.features.contracts import FeatureContract
from lakehouse_ml.features.expressions_arrow import Batched, to_arrow, value_text
from lakehouse_ml.features.feature_lookup import FeatureLookup
from lakehouse_ml.features.on_demand import OnDemandFeature, computable, on_demand_columns, parse_on_demand
from lakehouse_ml.features.rules import RULES, Rule, feature_column, table_rules
from lakehouse_ml.features.tables import ENTITY, feature_lookups, parsed_contracts
from lakehouse_ml.online.store import FOUND, OnlineStore, read_as_of


class NotPublishedError(LookupError):
    """A lookup as of the store's publish time, on a store with no table published."""


def as_utc(at: datetime | pd.Timestamp | str) -> datetime:
    """A request time as an aware UTC ``datetime``; a time without a zone is refused."""
    stamp = pd.Timestamp(at)
    if stamp.tzinfo is None:
        raise ValueError(f"request time must carry a time zone (e.g. 2026-03-01T00:00:00Z), got {at!r}")
    return stamp.tz_convert("UTC").to_pydatetime().replace(tzinfo=timezone.utc)


def _fallback_type(contract: FeatureContract, column: str) -> pa.DataType:
    """The type of a column the store has no schema for (never published): from the contract."""
    if column in (contract.timestamp_key, contract.ingested_at_key):
        return pa.timestamp("us", tz="UTC")
    if column not in contract.feature_names:
        return pa.string()
    unit = contract.feature(column).unit
    return {"category": pa.string(), "timestamp": pa.timestamp("us", tz="UTC")}.get(unit, pa.float64())


class OnlineFeatureLookup:
    """Feature vectors per customer from an :class:`OnlineStore`, defined like the training set's."""

    def __init__(
        self,
        store: OnlineStore,
        contracts: dict[str, FeatureContract],
        lookups: dict[str, Any],
        on_demand: Mapping[str, OnDemandFeature] | None = None,
        *,
        rules: Sequence[str] = RULES,
    ) -> None:
        unknown = sorted(set(rules) - set(RULES))
        if unknown:
            raise ValueError(f"online lookup rules: unknown {unknown}; expected some of {list(RULES)}")
        self.store = store
        self.contracts = dict(contracts)
        self.rules = set(rules)
        # The training set's lookups; the source is the table's name (the store is read instead).
        self.lookups: list[FeatureLookup] = feature_lookups({name: name for name in lookups}, self.contracts, lookups)
        looked_up = [column for lookup in self.lookups for column in lookup.output_columns()]
        self.on_demand = computable(dict(on_demand or {}), looked_up)
        self._produced = frozenset(self.output_columns())
        self._last_checks: tuple[tuple[tuple[str, ...], datetime, pa.Schema], tuple[list[Rule], Batched]] | None = None

    @classmethod
    def from_params(
        cls,
        store: OnlineStore,
        feature_tables: dict,
        lookups: dict,
        on_demand_features: dict | None = None,
        **options: Any,
    ) -> OnlineFeatureLookup:
        """From the raw parameters ``feature_tables`` and ``on_demand_features`` and the resolved
        lookups (``features.tables.resolve_lookups``)."""
        return cls(store, parsed_contracts(feature_tables), lookups, parse_on_demand(on_demand_features), **options)

    def output_columns(self) -> list[str]:
        """Every column :meth:`vectors` can return."""
        return [*(column for lookup in self.lookups for column in lookup.output_columns()), *self.on_demand]

    # -------------------------------------------------------- vectors

    def vectors(
        self, customer_ids: list[str], at: datetime | None, input_columns: list[str]
    ) -> tuple[pd.DataFrame, dict[str, list[str]]]:
        """One row per customer id (request order, index ``customer_id``) with ``input_columns``
        typed as the training set has them, and ``{customer id: reasons}`` for rows with problems.

        ``at`` None: as of the store's publish time (the latest ``as_of`` of the tables), read in
        the same snapshot as the rows; :class:`NotPublishedError` when no table has one."""
        at = as_utc(at) if at is not None else None
        ids = [str(customer) for customer in customer_ids]
        missing = [column for column in input_columns if column not in self._produced]
        if missing:
            raise ValueError(
                f"online lookup: input columns {missing} are not produced by the training set's lookups "
                f"(they produce {self.output_columns()}): check training_set.lookups and lookup_defaults"
            )
        stored = self.store.read({lookup.name: ids for lookup in self.lookups})
        if at is None:
            published = [as_of for rows in stored.values() if (as_of := read_as_of(rows)) is not None]
            if not published:
                raise NotPublishedError(
                    f"online store {self.store.describe()}: no table of {sorted(stored)} has been published with an as-of"
                )
            at = max(published)
        values: dict[str, pa.Array] = {}
        problems: dict[str, list[str]] = {customer: [] for customer in ids}
        found = pa.array([False] * len(ids))
        for lookup in self.lookups:
            rows = stored[lookup.name]
            present = rows.column(FOUND).combine_chunks()
            found = pc.or_(found, present)
            usable = self._usable(lookup, rows, at)
            for position in _positions(pc.and_(present, pc.invert(usable))):
                problems[ids[position]] += self._unusable(lookup, rows, position, at)
            self._collect(lookup, rows, usable, values)
        self._compute_on_demand(at, values)
        self._judge(ids, at, input_columns, values, problems)
        for position in _positions(pc.invert(found)):
            problems[ids[position]] = [f"{ENTITY}: not in the online store"]
        frame = pa.table({c: values[c] for c in input_columns}).to_pandas()
        frame.index = pd.Index(ids, name=ENTITY)
        return frame, {customer: reasons for customer, reasons in problems.items() if reasons}

    @staticmethod
    def _usable(lookup: FeatureLookup, rows: pa.Table, at: datetime) -> pa.Array:
        """Per row, whether its stored row may be used at ``at`` by the point-in-time rules."""
        stamp = _column(rows, lookup.timestamp_key)
        usable = pc.and_(rows.column(FOUND).combine_chunks(), pc.is_valid(stamp))
        usable = pc.and_(usable, pc.less_equal(stamp, pa.scalar(at, stamp.type)))
        if lookup.lookback_window is not None:
            usable = pc.and_(usable, pc.greater_equal(stamp, pa.scalar(at - lookup.lookback_window, stamp.type)))
        if lookup.filter_by_ingested_at:
            known = _column(rows, lookup.ingested_at_key)
            usable = pc.and_(usable, pc.and_(pc.is_valid(known), pc.less_equal(known, pa.scalar(at, known.type))))
        return pc.fill_null(usable, False)

    @staticmethod
    def _unusable(lookup: FeatureLookup, rows: pa.Table, position: int, at: datetime) -> list[str]:
        """Why a stored row newer than ``at`` is not used (a stale one is reported by freshness)."""
        stamp = _column(rows, lookup.timestamp_key)[position].as_py()
        known = _column(rows, lookup.ingested_at_key)[position].as_py() if lookup.ingested_at_key else None
        later = stamp is not None and stamp > at
        later |= lookup.filter_by_ingested_at and (known is None or known > at)
        if not later:
            return []
        return [
            f"{lookup.name}.{lookup.timestamp_key}: point_in_time expected a row stamped and known by {at.isoformat()}, "
            f"got {lookup.timestamp_key} {value_text(stamp)}, {lookup.ingested_at_key} {value_text(known)} "
            "(the online store was published after the request time)"
        ]

    def _collect(self, lookup: FeatureLookup, rows: pa.Table, usable: pa.Array, values: dict[str, pa.Array]) -> None:
        """The lookup's output columns, typed as stored: null where no row is used."""
        contract = self.contracts[lookup.name]
        names = set(rows.column_names)
        stored = [feature for feature in lookup.feature_names if feature in names]
        # One take for all columns (a null index gives a null row), not a kernel call per column.
        chosen = rows.select(stored).take(pc.if_else(usable, pa.array(np.arange(rows.num_rows)), None))
        for feature in lookup.feature_names:
            if feature in stored:
                values[f"{lookup.prefix}{feature}"] = chosen.column(feature).combine_chunks()
            else:  # never published: typed from the contract
                values[f"{lookup.prefix}{feature}"] = pa.nulls(rows.num_rows, _fallback_type(contract, feature))

    def _compute_on_demand(self, at: datetime, values: dict[str, pa.Array]) -> None:
        """The on-demand features over the looked-up columns, as of the request time."""
        inputs = {column for feature in self.on_demand.values() for column in feature.inputs}
        if not inputs:
            return
        looked_up = pa.table({column: values[column] for column in sorted(inputs)})
        values.update(on_demand_columns(looked_up, self.on_demand, at))

    # -------------------------------------------------------- problems (batch inference's rejection reasons)

    def _checks(self, inputs: tuple[str, ...], at: datetime, schema: pa.Schema) -> tuple[list[Rule], Batched]:
        """The rules of ``inputs`` at ``at`` that apply to columns of ``schema``, batched; kept for the
        next request at the same time (with ``serving.request_time: online_store`` every request
        has the store's time)."""
        key = (inputs, at, schema)
        last = self._last_checks  # one read: another thread may replace it meanwhile
        if last is None or last[0] != key:
            rules = [
                rule
                for rule in table_rules(self.contracts, inputs, self.rules, at, self.on_demand)
                if rule.numeric_column is None or _numeric(schema.field(rule.numeric_column).type)
            ]
            last = (key, (rules, Batched({str(n): rule.breaks for n, rule in enumerate(rules)}, schema)))
            self._last_checks = last
        return last[1]

    def _judge(
        self,
        ids: list[str],
        at: datetime,
        inputs: list[str],
        values: dict[str, pa.Array],
        problems: dict[str, list[str]],
    ) -> None:
        """Append, per customer, the reasons batch inference's ``rejection_reasons`` gives: the same
        rules (on-demand features' too), evaluated with Arrow over the looked-up columns."""
        columns = {column: values[column] for column in inputs}
        for table, contract in self.contracts.items():
            stamp = feature_column(table, contract.timestamp_key)
            columns[stamp] = values.get(stamp, pa.nulls(len(ids), pa.timestamp("us", tz="UTC")))
        looked_up = pa.table(columns)
        rules, checks = self._checks(tuple(inputs), at, looked_up.schema)
        # Every promise is checked on every row, promises of one shape together; the reason text is
        # built only for the rows that break one (building it for all rows was most of a 100-row
        # lookup's time).
        broken = checks.evaluate(looked_up, at)
        if not any(verdict.true_count for verdict in broken.values()):
            return
        for n, rule in enumerate(rules):
            positions = _positions(broken[str(n)])
            if not positions:
                continue
            reasons = to_arrow(rule.reason(), looked_up.take(positions), at).to_pylist()
            for position, reason in zip(positions, reasons):
                if reason is not None:
                    problems[ids[position]].append(reason)


def _positions(mask: pa.Array) -> list[int]:
    """The positions where ``mask`` is true (null counts as false)."""
    return pc.indices_nonzero(pc.fill_null(mask, False)).to_pylist()


def _column(rows: pa.Table, name: str | None) -> pa.Array:
    """A column of the read rows; all null when the store has none by that name."""
    stamp = pa.timestamp("us", tz="UTC")
    if name is not None and name in rows.column_names:
        column = rows.column(name).combine_chunks()
        # A time column published all-null keeps Arrow's null type: it is a column of null times.
        return pc.cast(column, stamp) if pa.types.is_null(column.type) else column
    return pa.nulls(rows.num_rows, stamp)


def _numeric(data_type: pa.DataType) -> bool:
    """A number type, as Spark's ``NumericType`` (booleans, strings and times are not)."""
    return pa.types.is_integer(data_type) or pa.types.is_floating(data_type) or pa.types.is_decimal(data_type)
