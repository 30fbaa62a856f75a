"""The vectorised point-in-time kernel run inside Spark by :mod:`lakehouse_ml.features.lookup`.

``build_training_set`` unions spine rows and feature rows, hash-partitions them by the lookup key
(every row of a key lands in the same partition) and answers each partition whole with
:func:`answer_partition` through ``mapInArrow``: it runs on the executors, never on the driver.
It only depends on numpy and pyarrow; like any UDF of the project, it is pickled by reference,
so the executors must have this package installed (as they must for the pipeline's nodes).

A partition ("bucket") is a pyarrow table with these columns (names from :data:`COLUMNS`):

- ``key0 … keyN`` the lookup key (same Arrow type for spine and feature rows);
- ``t``   int64 microseconds since the epoch, UTC: the spine cutoff for spine rows, the
  feature timestamp for feature rows;
- ``ing`` int64 microseconds: ``ingested_at`` of a feature row (may be null), null on spine rows;
- ``rid`` the spine row id, non-null exactly on spine rows;
- payload columns (spine rows only) and value columns (feature rows only).

Feature rows whose key or timestamp is null (or, when filtering by ingestion time, whose
``ingested_at`` is null) are dropped by the caller before the shuffle: they are never eligible.

The rule, for a spine row (key k, cutoff t): among the feature rows of key k with
``feature_ts <= t`` (and ``ingested_at <= t`` when filtering), take the greatest
``(feature_ts, ingested_at)`` with a null ``ingested_at`` lowest; then drop it if
``feature_ts < t - lookback``. How, in O(n log n) per bucket:

1. rank the feature rows by ``(key, feature_ts, ingested_at is not null, ingested_at)``; a
   higher rank is a better row (rows tied on all three are interchangeable: either may win);
2. a row becomes eligible at its *availability* time ``a``: ``feature_ts`` (or, when filtering,
   ``max(feature_ts, ingested_at)``, since both must be <= t) and stays eligible later, so the
   answer at t is the best rank among the rows of key k with ``a <= t``: sort the feature rows
   by ``(key, a)``, take the running maximum of the rank, and binary-search each spine
   ``(key, t)`` in that order (key codes and times are packed into one int64). Without
   filtering ``a`` is ``feature_ts``, the rank order is already sorted by ``(key, a)`` and the
   running maximum is the position itself: one sort and one binary search;
3. the running maximum crosses key boundaries, but ranks of a key are all above those of
   earlier keys, so it is the key's own best as soon as the found position has the same key;
4. the lookback only needs checking on the chosen row: if the best row is older than
   ``t - lookback`` then so is every eligible row (they rank below it by ``feature_ts``).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

COLUMNS = {"t": "__pit_t", "ing": "__pit_ing", "rid": "__pit_rid"}


def key_column(index: int) -> str:
    """The bucket table's name of the ``index``-th lookup key column."""
    return f"__pit_key{index}"


def _valid(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(pc.is_valid(column).to_numpy(zero_copy_only=False), dtype=bool)


def _int64(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    filled = pc.fill_null(column.cast(pa.int64()), 0)
    return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=np.int64)


def _key_codes(table: pa.Table, n_keys: int) -> tuple[np.ndarray, np.ndarray]:
    """Int64 codes equal exactly when all key columns are equal, and the non-null mask."""
    codes = np.zeros(table.num_rows, dtype=np.int64)
    valid = np.ones(table.num_rows, dtype=bool)
    for index in range(n_keys):
        column = table.column(key_column(index)).combine_chunks()
        if pa.types.is_boolean(column.type):
            column = column.cast(pa.int8())
        encoded = pc.dictionary_encode(column)
        valid &= _valid(encoded)
        part = _int64(encoded.indices)
        size = max(len(encoded.dictionary), 1)
        if index:
            if int(codes.max(initial=0)) >= (2**62) // size:
                codes = np.unique(codes, return_inverse=True)[1].astype(np.int64)
            codes = codes * size + part
        else:
            codes = part
    return codes, valid


def _pack(codes: list[np.ndarray], times: list[np.ndarray]) -> list[np.ndarray]:
    """Pack (key code, time) pairs into int64s ordered like the pairs, jointly for all inputs."""
    sizes = np.cumsum([len(c) for c in codes])[:-1]
    all_codes = np.concatenate(codes)
    all_times = np.concatenate(times)
    low = int(all_times.min())
    span = int(all_times.max()) - low + 1
    if (int(all_codes.max()) + 1) * span >= 2**62:
        all_codes = np.unique(all_codes, return_inverse=True)[1].astype(np.int64).ravel()
        if (int(all_codes.max()) + 1) * span >= 2**62:
            instants, dense = np.unique(all_times, return_inverse=True)
            all_times, low, span = dense.astype(np.int64).ravel(), 0, len(instants)
    packed = all_codes * np.int64(span) + (all_times - np.int64(low))
    return np.split(packed, sizes)


def _rank_order(packed: np.ndarray, ing_known: np.ndarray, ing: np.ndarray) -> np.ndarray:
    """Feature rows from worst to best: by packed (key, feature_ts), then a known ingested_at
    above a null one, then ingested_at. Only the tied rows pay for the second sort."""
    order = np.argsort(packed)
    ordered = packed[order]
    ties = np.flatnonzero(ordered[1:] == ordered[:-1])
    if ties.size:
        in_run = np.zeros(order.size, dtype=bool)  # runs of equal keys: contiguous, ascending
        in_run[ties] = True
        in_run[ties + 1] = True
        positions = np.flatnonzero(in_run)
        rows = order[positions]
        # a null ingested_at ranks lowest: below any Spark timestamp (year 1 and later)
        ing_rank = np.where(ing_known[rows], ing[rows], np.iinfo(np.int64).min)
        order[positions] = rows[np.lexsort((ing_rank, packed[rows]))]
    return order


def as_of_bucket(  # noqa: PLR0913 - a flat signature keeps the closure small and picklable
    table: pa.Table,
    *,
    n_keys: int,
    payload: list[str],
    values: list[str],
    outputs: list[str],
    lookback_us: int | None,
    by_availability: bool,
    schema: pa.Schema,
) -> pa.Table:
    """Answer every spine row of one bucket; see the module docstring for the rule."""
    is_spine = _valid(table.column(COLUMNS["rid"]))
    spine_rows = np.flatnonzero(is_spine)
    feature_rows = np.flatnonzero(~is_spine)
    if spine_rows.size == 0:
        return schema.empty_table()

    time_column = table.column(COLUMNS["t"])
    times = _int64(time_column)
    codes, keys_valid = _key_codes(table, n_keys)
    chosen = np.full(spine_rows.size, -1, dtype=np.int64)  # a row of `table`, or -1: no match
    asks = np.flatnonzero((keys_valid & _valid(time_column))[spine_rows])
    ing_column = table.column(COLUMNS["ing"])
    if by_availability:  # the caller drops rows with a null ingested_at already; be safe anyway
        feature_rows = feature_rows[_valid(ing_column)[feature_rows]]

    if feature_rows.size and asks.size:
        f_code, f_ts = codes[feature_rows], times[feature_rows]
        s_code, s_time = codes[spine_rows[asks]], times[spine_rows[asks]]
        f_ing = _int64(ing_column)[feature_rows]
        f_ing_known = _valid(ing_column)[feature_rows]
        # 1. rank order: the greatest (feature_ts, ingested_at) last, a null ingested_at lowest
        f_key, s_key = _pack([f_code, s_code], [f_ts, s_time])
        by_rank = _rank_order(f_key, f_ing_known, f_ing)
        if by_availability:
            # 2. eligible from max(feature_ts, ingested_at): best rank among rows available by t
            f_avail, s_avail = _pack([f_code, s_code], [np.maximum(f_ts, f_ing), s_time])
            rank = np.empty(feature_rows.size, dtype=np.int64)
            rank[by_rank] = np.arange(feature_rows.size)
            by_avail = np.argsort(f_avail)
            position = np.searchsorted(f_avail[by_avail], s_avail, side="right") - 1
            at = np.maximum(position, 0)
            winner = by_rank[np.maximum.accumulate(rank[by_avail])[at]]
            same_key = (position >= 0) & (f_code[by_avail[at]] == s_code)
        else:
            # 2. eligible from feature_ts: availability order is the rank order itself
            position = np.searchsorted(f_key[by_rank], s_key, side="right") - 1
            winner = by_rank[np.maximum(position, 0)]
            same_key = (position >= 0) & (f_code[winner] == s_code)
        # 3./4. same key, and within the lookback window
        ok = same_key
        if lookback_us is not None:
            ok &= f_ts[winner] >= s_time - lookback_us
        chosen[asks[ok]] = feature_rows[winner[ok]]

    spine_take = pa.array(spine_rows, pa.int64())
    feature_take = pa.array(np.maximum(chosen, 0), pa.int64(), mask=chosen < 0)
    arrays: list[Any] = [table.column(COLUMNS["rid"]).take(spine_take)]
    arrays += [table.column(name).take(spine_take) for name in payload]
    arrays += [table.column(name).take(feature_take) for name in values]
    names = [COLUMNS["rid"], *payload, *outputs]
    return pa.Table.from_arrays(arrays, names=names).cast(schema)


# Engines that run Python UDFs as threads of one process (Sail) start every partition at once;
# the kernel holds the GIL for most of its work (numpy sorts and searches do not release it),
# so running more than one at a time per process only adds thrashing. Spark's Python workers
# are one process per task, where this changes nothing.
_KERNEL_SLOTS = threading.BoundedSemaphore(1)


def answer_partition(batches: Any, **params: Any) -> Any:
    """``mapInArrow`` body: answer one whole partition (all rows of its keys) at once."""
    batches = list(batches)
    if batches:
        table = pa.Table.from_batches(batches)
        del batches
        with _KERNEL_SLOTS:
            answer = as_of_bucket(table, **params)
        del table
        yield from answer.to_batches(max_chunksize=65_536)
