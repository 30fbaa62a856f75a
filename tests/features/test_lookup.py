"""Point-in-time feature lookups: every acceptance rule by hand, then random frames vs brute force.

Expected values are worked out by hand in the comments.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from lakehouse_ml.features.lookup import (
    FeatureLookup,
    FeatureLookupError,
    build_training_set,
    parse_lookback_window,
)

UTC = dt.timezone.utc
US = dt.timedelta(microseconds=1)
T0 = dt.datetime(2026, 1, 1, 10, 0, tzinfo=UTC)  # the usual spine cutoff

SPINE = "id long, ts timestamp, tag string"
FEATURES = "id long, feature_ts timestamp, ingested_at timestamp, v long, w string"


def at(**delta: float) -> dt.datetime:
    """T0 shifted, e.g. at(hours=-1, microseconds=-1)."""
    return T0 + dt.timedelta(**delta)


def lookup(source, features=("v",), **kwargs) -> FeatureLookup:
    kwargs.setdefault("lookup_key", "id")
    kwargs.setdefault("timestamp_key", "feature_ts")
    kwargs.setdefault("name", "ft")
    return FeatureLookup(source=source, feature_names=list(features), **kwargs)


def build(spine, lookups, entity_key="id", timestamp_key="ts"):
    return build_training_set(spine, lookups, entity_key, timestamp_key)


def rows(frame) -> list[tuple]:
    return [tuple(row) for row in frame.collect()]


def column(frame, name: str) -> list:
    return [row[name] for row in frame.collect()]


# ------------------------------------------------------------------------ rules 2, 3 and 4: bounds


def test_feature_ts_equal_to_the_cutoff_is_eligible_one_microsecond_later_is_not(spark):
    features = spark.createDataFrame(
        [(1, at(microseconds=-1), None, 1, None), (1, T0, None, 2, None), (1, at(microseconds=1), None, 3, None)],
        FEATURES,
    )
    spine = spark.createDataFrame(
        [(1, at(microseconds=-2), "a"), (1, at(microseconds=-1), "b"), (1, T0, "c"), (1, at(microseconds=1), "d")],
        SPINE,
    )
    result = build(spine, [lookup(features)])
    # t-2us: nothing yet; t-1us: the t-1us row; t: the t row (inclusive); t+1us: the t+1us row
    assert column(result, "ft__v") == [None, 1, 2, 3]


def test_lookback_window_is_inclusive_at_its_start(spark):
    features = spark.createDataFrame(
        [(1, at(hours=-1), None, 1, None), (2, at(hours=-1, microseconds=-1), None, 2, None)], FEATURES
    )
    spine = spark.createDataFrame(
        [(1, T0, "exactly 1h old"), (2, T0, "1h + 1us old"), (2, at(microseconds=-1), "exactly 1h old")], SPINE
    )
    result = build(spine, [lookup(features, lookback_window="1 hour")])
    assert column(result, "ft__v") == [1, None, 2]
    # the same as a timedelta, and a zero window keeps only rows stamped exactly at the cutoff
    same = build(spine, [lookup(features, lookback_window=dt.timedelta(hours=1))])
    assert column(same, "ft__v") == [1, None, 2]
    exact = spark.createDataFrame([(1, at(microseconds=-1), None, 6, None), (2, T0, None, 7, None)], FEATURES)
    at_t0 = spark.createDataFrame([(1, T0, None), (2, T0, None)], SPINE)
    zero = build(at_t0, [lookup(exact, lookback_window=dt.timedelta(0))])
    assert column(zero, "ft__v") == [None, 7]


def test_lookback_falls_back_to_null_not_to_an_older_row(spark):
    # the newest eligible row is out of the window: no older row can be inside it either
    features = spark.createDataFrame([(1, at(days=-40), None, 1, None), (1, at(days=-31), None, 2, None)], FEATURES)
    spine = spark.createDataFrame([(1, T0, "a"), (1, at(days=-5), "b")], SPINE)
    assert column(build(spine, [lookup(features, lookback_window="30 days")]), "ft__v") == [None, 2]


def test_filter_by_ingested_at_bounds_and_ranking_by_feature_ts(spark):
    features = spark.createDataFrame(
        [
            (1, at(hours=-3), at(hours=-3), 1, None),  # known early
            (1, at(hours=-2), at(hours=-1), 2, None),  # known 1h before the cutoff
            (1, at(hours=-1), T0, 3, None),  # known exactly at the cutoff
            (1, at(minutes=-30), at(microseconds=1), 4, None),  # known 1us after the cutoff
            (2, at(hours=-2), at(hours=-2), 5, None),
            (2, at(hours=-1), at(microseconds=1), 6, None),  # 2: better by feature_ts, known too late
            (3, at(hours=-5), at(hours=-1), 7, None),  # 3: known last but older feature_ts
            (3, at(hours=-4), at(hours=-4), 8, None),  #    -> the newer feature_ts wins
        ],
        FEATURES,
    )
    spine = spark.createDataFrame(
        [
            (1, at(microseconds=-1), "a"),
            (1, T0, "b"),
            (1, at(microseconds=1), "c"),
            (2, T0, "d"),
            (2, at(microseconds=1), "e"),
            (3, T0, "f"),
        ],
        SPINE,
    )
    filtered = build(spine, [lookup(features, ingested_at_key="ingested_at", filter_by_ingested_at=True)])
    assert column(filtered, "ft__v") == [2, 3, 4, 5, 6, 8]
    # without the filter ingested_at only breaks ties: the latest feature_ts <= t wins
    unfiltered = build(spine, [lookup(features, ingested_at_key="ingested_at")])
    assert column(unfiltered, "ft__v") == [4, 4, 4, 6, 6, 8]


def test_filter_by_ingested_at_with_lookback(spark):
    features = spark.createDataFrame(
        [(1, at(hours=-5), at(hours=-5), 1, None), (1, at(hours=-1), at(minutes=1), 2, None)], FEATURES
    )
    spine = spark.createDataFrame([(1, T0, "a"), (1, at(minutes=1), "b")], SPINE)
    result = build(
        spine,
        [lookup(features, ingested_at_key="ingested_at", filter_by_ingested_at=True, lookback_window="2 hours")],
    )
    # at T0 only the 5h-old row is known, and it is outside the 2h window; a minute later the
    # 1h-old row is known (ingested exactly then)
    assert column(result, "ft__v") == [None, 2]


# ------------------------------------------------------------------------------- rule 5: ties


def test_ties_on_feature_ts_are_broken_by_ingested_at_with_null_lowest(spark):
    features = spark.createDataFrame(
        [
            (1, at(hours=-1), None, 1, None),
            (1, at(hours=-1), at(minutes=-50), 2, None),
            (1, at(hours=-1), at(minutes=-55), 3, None),
            (2, at(hours=-1), at(hours=-1), 4, None),
            (2, at(hours=-1), None, 5, None),
            (3, at(hours=-1), None, 6, None),
            (3, at(hours=-2), at(hours=-2), 7, None),  # older feature_ts: loses despite a known ingested_at
        ],
        FEATURES,
    )
    spine = spark.createDataFrame([(1, T0, "a"), (2, T0, "b"), (3, T0, "c")], SPINE)
    assert column(build(spine, [lookup(features, ingested_at_key="ingested_at")]), "ft__v") == [2, 4, 6]


def test_null_ingested_at_is_not_eligible_when_filtering(spark):
    features = spark.createDataFrame(
        [(1, at(hours=-2), at(hours=-2), 1, None), (1, at(hours=-1), None, 2, None)], FEATURES
    )
    spine = spark.createDataFrame([(1, T0, "a")], SPINE)
    unfiltered = build(spine, [lookup(features, ingested_at_key="ingested_at")])
    filtered = build(spine, [lookup(features, ingested_at_key="ingested_at", filter_by_ingested_at=True)])
    assert column(unfiltered, "ft__v") == [2]
    assert column(filtered, "ft__v") == [1]


def test_chosen_row_is_returned_whole_and_a_null_feature_stays_null(spark):
    features = spark.createDataFrame(
        [
            (1, at(hours=-2), None, 1, "old"),
            (1, at(hours=-1), None, None, "new"),
            (1, at(hours=-1, minutes=-30), None, 3, None),
        ],
        FEATURES,
    )
    spine = spark.createDataFrame([(1, T0, "a"), (1, at(hours=-1, minutes=-10), "b")], SPINE)
    result = build(spine, [lookup(features, ("v", "w"))])
    # T0: the newest row (v NULL, w 'new'), v is not filled with 3 or 1;
    # 08:50: the 08:30 row (v 3, w NULL), w is not filled with 'old'
    assert [(r["ft__v"], r["ft__w"]) for r in result.collect()] == [(None, "new"), (3, None)]


# ---------------------------------------------------------------------- rules 1 and 2: NULLs


def test_null_keys_never_match_on_either_side(spark):
    features = spark.createDataFrame([(None, at(hours=-1), None, 1, None), (2, at(hours=-1), None, 2, None)], FEATURES)
    spine = spark.createDataFrame([(None, T0, "null key"), (2, T0, "key 2"), (1, T0, "key 1")], SPINE)
    assert column(build(spine, [lookup(features)]), "ft__v") == [None, 2, None]


def test_null_timestamps_are_never_eligible_on_either_side(spark):
    features = spark.createDataFrame([(1, None, None, 1, None), (1, at(hours=-1), None, 2, None)], FEATURES)
    spine = spark.createDataFrame([(1, None, "null cutoff"), (1, T0, "cutoff")], SPINE)
    # the feature row without a timestamp is never chosen, even though it could be "latest"
    assert column(build(spine, [lookup(features)]), "ft__v") == [None, 2]


def test_composite_keys_match_on_all_parts(spark):
    schema = "a long, b string, feature_ts timestamp, v long"
    features = spark.createDataFrame(
        [(1, "x", at(hours=-1), 1), (1, "y", at(hours=-1), 2), (2, "x", at(hours=-1), 3), (1, None, at(hours=-1), 4)],
        schema,
    )
    spine = spark.createDataFrame(
        [(1, "y", T0), (2, "x", T0), (2, "y", T0), (1, None, T0), (None, "x", T0)], "a long, b string, ts timestamp"
    )
    result = build(spine, [lookup(features, lookup_key=["a", "b"])], entity_key=["a", "b"])
    assert column(result, "ft__v") == [2, 3, None, None, None]


def test_integer_keys_of_different_widths_match(spark):
    features = spark.createDataFrame([(7, T0, 1)], "id long, feature_ts timestamp, v long")
    spine = spark.createDataFrame([(7, T0)], "id int, ts timestamp")
    result = build(spine, [lookup(features)])
    assert rows(result) == [(7, T0.replace(tzinfo=None), 1)]
    assert result.schema["id"].dataType.simpleString() == "int"  # the spine's type is kept


# ----------------------------------------------------------------- rule 6: the spine, untouched


def test_spine_rows_duplicates_and_order_are_kept(spark):
    features = spark.createDataFrame([(1, at(hours=-1), None, 10, None), (2, at(hours=-1), None, 20, None)], FEATURES)
    spine_rows = [
        (2, T0, "x"),
        (1, T0, "x"),
        (2, T0, "x"),
        (1, at(hours=-2), "y"),
        (2, T0, "x"),
        (1, T0, "x"),
        (None, None, None),
    ]
    spine = spark.createDataFrame(spine_rows, SPINE)
    result = build(spine, [lookup(features)])
    assert result.columns == ["id", "ts", "tag", "ft__v"]
    naive = [(i, t.replace(tzinfo=None) if t else None, g) for i, t, g in spine_rows]
    assert [r[:3] for r in rows(result)] == naive
    assert column(result, "ft__v") == [20, 10, 20, None, 20, 10, None]


def test_spine_values_of_every_type_are_returned_unchanged(spark):
    spine = spark.sql(
        """
        SELECT 1L AS id, TIMESTAMP'2026-01-01 10:00:00' AS ts,
               CAST(12.345 AS DECIMAL(10, 3)) AS amount, DATE'2025-12-31' AS day,
               TIMESTAMP_NTZ'2026-01-01 03:04:05.000006' AS local_ts, true AS flag, X'CAFE' AS raw,
               array(1, 2, NULL) AS arr, map('k', 1.5D) AS m, named_struct('a', 1, 'b', 'z') AS s,
               CAST(NULL AS STRING) AS empty
        """
    )
    features = spark.createDataFrame([(1, at(hours=-1), None, 5, "w")], FEATURES)
    result = build(spine, [lookup(features, ("v", "w"))])
    assert result.columns == [*spine.columns, "ft__v", "ft__w"]
    assert [f.dataType for f in result.schema.fields[: len(spine.columns)]] == [f.dataType for f in spine.schema.fields]
    assert rows(result) == [(*rows(spine)[0], 5, "w")]


def test_feature_values_of_every_type_are_returned_unchanged(spark):
    features = spark.sql(
        """
        SELECT 1L AS id, TIMESTAMP'2026-01-01 09:00:00' AS feature_ts,
               CAST(1.5 AS DECIMAL(5, 2)) AS dec, array('a', NULL) AS arr, map('x', 2L) AS m,
               named_struct('p', 1.0D, 'q', CAST(NULL AS STRING)) AS st, DATE'2026-01-01' AS d,
               TIMESTAMP_NTZ'2026-01-01 01:02:03' AS ntz, CAST(3.5 AS FLOAT) AS f
        """
    )
    names = ["dec", "arr", "m", "st", "d", "ntz", "f", "feature_ts"]
    spine = spark.createDataFrame([(1, T0, "a")], SPINE)
    result = build(spine, [lookup(features, names, prefix="")])
    assert result.columns == ["id", "ts", "tag", *names]
    assert [result.schema[n].dataType for n in names] == [features.schema[n].dataType for n in names]
    assert rows(result)[0][3:] == rows(features.select(*names))[0]


def test_multiple_lookups_with_default_explicit_and_empty_prefixes(spark):
    activity = spark.createDataFrame([(1, at(hours=-1), None, 11, "a1"), (2, at(hours=-3), None, 22, "a2")], FEATURES)
    profile = spark.createDataFrame(
        [("gold", at(days=-1), 0.5), ("gold", at(days=1), 0.9)], "segment string, since timestamp, discount double"
    )
    spine = spark.createDataFrame(
        [(1, T0, "gold"), (2, at(hours=-4), "gold"), (3, T0, None)], "id long, ts timestamp, segment string"
    )
    result = build(
        spine,
        [
            lookup(activity, ("v", "w"), name="activity"),
            lookup(activity, ("v",), prefix="recent_", lookback_window="90 minutes"),
            FeatureLookup(profile, ["discount"], "segment", "since", prefix=""),
        ],
    )
    assert result.columns == ["id", "ts", "segment", "activity__v", "activity__w", "recent_v", "discount"]
    assert [r[3:] for r in rows(result)] == [(11, "a1", 11, 0.5), (None, None, None, 0.5), (None, None, None, None)]


def test_spine_order_is_kept_whatever_the_keys(spark):
    features = spark.createDataFrame([(k, at(hours=-k), None, k, None) for k in range(1, 6)], FEATURES)
    spine = spark.createDataFrame([(k, T0, None) for k in (5, 3, 1, 4, 2, 9)], SPINE)
    result = build_training_set(spine, [lookup(features)], "id", "ts")
    assert column(result, "ft__v") == [5, 3, 1, 4, 2, None]


def test_floating_point_keys_match_by_value(spark):
    # NaN matches NaN and -0.0 matches 0.0, as in Spark joins; NULL matches nothing
    nan = float("nan")
    features = spark.createDataFrame(
        [(nan, at(hours=-1), 1), (0.0, at(hours=-1), 2), (1.5, at(hours=-1), 3), (None, at(hours=-1), 4)],
        "id double, feature_ts timestamp, v long",
    )
    spine = spark.createDataFrame([(k, T0) for k in (nan, 0.0, -0.0, 1.5, None)], "id double, ts timestamp")
    assert column(build(spine, [lookup(features)]), "ft__v") == [1, 2, 2, 3, None]


def test_ties_on_feature_ts_when_filtering_take_the_latest_ingested_that_is_known(spark):
    features = spark.createDataFrame(
        [
            (1, at(hours=-3), at(hours=-2), 1, "a"),
            (1, at(hours=-3), at(hours=-1), 2, "b"),
            (1, at(hours=-3), at(hours=1), 3, "c"),  # known only after the cutoff
            (1, at(hours=-4), at(minutes=-1), 4, "d"),  # known later than the others, but older
        ],
        FEATURES,
    )
    spine = spark.createDataFrame([(1, T0, None), (1, at(hours=-1, microseconds=-1), None)], SPINE)
    result = build(spine, [lookup(features, ("v", "w"), ingested_at_key="ingested_at", filter_by_ingested_at=True)])
    assert [r[3:] for r in rows(result)] == [(2, "b"), (1, "a")]


def test_rows_tied_on_key_time_and_ingested_at_give_one_whole_row(spark):
    features = spark.createDataFrame(
        [(1, at(hours=-1), at(hours=-1), 1, "a"), (1, at(hours=-1), at(hours=-1), 2, "b")], FEATURES
    )
    spine = spark.createDataFrame([(1, T0, "x"), (1, T0, "y")], SPINE)
    for filtered in (False, True):
        result = rows(
            build(spine, [lookup(features, ("v", "w"), ingested_at_key="ingested_at", filter_by_ingested_at=filtered)])
        )
        assert [r[2] for r in result] == ["x", "y"]
        assert all(r[3:] in ((1, "a"), (2, "b")) for r in result)


def test_ties_at_several_spine_times_of_a_key_give_one_whole_row_each(spark):
    # three tied rows at each of two instants, asked at five times of one key (two asked twice):
    # each spine row once, one whole row of the right instant, in the spine's order
    tied = [(1, at(hours=-h), at(hours=-h), 10 * h + i, f"h{h}") for h in (1, 3) for i in range(3)]
    features = spark.createDataFrame(tied, FEATURES)
    times = [T0, at(hours=-2), at(hours=-3), T0, at(hours=-4), at(hours=-2)]
    spine = spark.createDataFrame([(1, t, str(n)) for n, t in enumerate(times)], SPINE)
    for filtered in (False, True):
        lookups = [lookup(features, ("v", "w"), ingested_at_key="ingested_at", filter_by_ingested_at=filtered)]
        result = rows(build(spine, lookups))
        assert [r[2] for r in result] == [str(n) for n in range(len(times))]
        assert [r[4] for r in result] == ["h1", "h3", "h3", "h1", None, "h3"]
        assert all(v is None if w is None else v // 10 == int(w[1:]) for v, w in (r[3:] for r in result))


def test_far_instants_are_exact(spark):
    # far outside Spark's calendar (2**62 microseconds is about year 148,000): still ordered exactly
    features = spark.sql(
        "SELECT 1L AS id, timestamp_micros(4611686018427387904L) AS feature_ts, 9L AS v "
        "UNION ALL SELECT 1L, timestamp_micros(-4611686018427387904L), 7L"
    )
    spine = spark.createDataFrame([(1, T0)], "id long, ts timestamp")
    assert column(build(spine, [lookup(features)]), "ft__v") == [7]
    unlimited = lookup(features, lookback_window=dt.timedelta.max)
    assert column(build(spine, [unlimited]), "ft__v") == [7]


def test_a_multi_file_delta_table_is_read_consistently(spark, tmp_path):
    # appended in eight commits, so the table is eight files an engine may read in any order and
    # number differently on each read (as Sail does at this size): the answers must not depend on it
    path, n = str(tmp_path / "daily"), 50_000
    for part in range(8):
        spark.range(n).select(
            F.col("id"),
            F.lit(at(hours=-(part + 1))).alias("feature_ts"),
            F.lit(at(hours=-(part + 1))).alias("ingested_at"),
            (F.col("id") + 1_000_000 * part).alias("v"),
            F.lit(f"p{part}").alias("w"),
        ).write.format("delta").mode("append").save(path)
    spine = spark.range(n).select(F.col("id"), F.lit(at(hours=-2)).alias("ts"))
    result = build(spine, [FeatureLookup(path, ["v", "w"], "id", "feature_ts", ingested_at_key="ingested_at")])
    wrong = result.where((F.col("daily__v") != F.col("id") + 1_000_000) | (F.col("daily__w") != "p1"))
    assert result.count() == n
    assert wrong.count() == 0


def test_odd_column_names(spark):
    features = spark.createDataFrame([(1, T0, 3)], "`my id` long, `at.time` timestamp, `v``x` long")
    spine = spark.createDataFrame([(1, T0)], "`my id` long, `cut.off` timestamp")
    result = build(
        spine,
        [lookup(features, ("v`x",), lookup_key="my id", timestamp_key="at.time", prefix="f.")],
        entity_key="my id",
        timestamp_key="cut.off",
    )
    assert result.columns == ["my id", "cut.off", "f.v`x"]
    assert rows(result) == [(1, T0.replace(tzinfo=None), 3)]


def test_extreme_timestamps_and_many_keys(spark):
    # the ends of Spark's time range: the sort key 2 * micros + 1 and the packed
    # (feature_ts, ingested_at) decimal stay exact there
    first, last = dt.datetime(1, 1, 1, tzinfo=UTC), dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    features = spark.createDataFrame(
        [(k, ts, None, k * 10 + i, None) for k in range(60) for i, ts in enumerate((first, last))], FEATURES
    )
    cutoffs = (first, dt.datetime(5000, 1, 1, tzinfo=UTC), last)
    spine = spark.createDataFrame([(k, ts, None) for k in range(60) for ts in cutoffs], SPINE)
    assert column(build(spine, [lookup(features)]), "ft__v") == [k * 10 + i for k in range(60) for i in (0, 0, 1)]


# ------------------------------------------------------------------------ rule 7: time zones


def test_offsets_are_instants(spark):
    plus_two = dt.timezone(dt.timedelta(hours=2))
    features = spark.createDataFrame(
        [(1, dt.datetime(2026, 1, 1, 10, 0, tzinfo=plus_two), None, 1, None)], FEATURES
    ).union(
        spark.sql(
            "SELECT 2L, to_timestamp('2026-01-01T10:00:00+02:00'), CAST(NULL AS TIMESTAMP), 2L, CAST(NULL AS STRING)"
        )
    )
    spine = spark.createDataFrame(
        [(k, dt.datetime(2026, 1, 1, 8, 0, tzinfo=UTC) + d, None) for k in (1, 2) for d in (-US, dt.timedelta(0))],
        SPINE,
    )
    # 10:00+02:00 is 08:00Z: eligible at 08:00Z, not one microsecond before
    assert column(build(spine, [lookup(features)]), "ft__v") == [None, 1, None, 2]


def test_session_time_zone_does_not_matter_and_ntz_and_dates_are_utc(spark):
    features = spark.sql(
        """
        SELECT 1L AS id, TIMESTAMP_NTZ'2026-01-01 08:00:00' AS feature_ts, 1L AS v UNION ALL
        SELECT 2L, TIMESTAMP_NTZ'2026-03-08 02:30:00', 2L UNION ALL
        SELECT 3L, TIMESTAMP_NTZ'2026-01-01 23:59:59.999999', 3L
        """
    )
    spine = spark.createDataFrame(
        [
            (1, dt.datetime(2026, 1, 1, 8, 0, tzinfo=UTC) - US),
            (1, dt.datetime(2026, 1, 1, 8, 0, tzinfo=UTC)),
            # 02:30 on 2026-03-08 does not exist in New York (DST gap): still 02:30Z here
            (2, dt.datetime(2026, 3, 8, 2, 30, tzinfo=UTC) - US),
            (2, dt.datetime(2026, 3, 8, 2, 30, tzinfo=UTC)),
        ],
        "id long, ts timestamp",
    )
    dates = spark.createDataFrame([(3, dt.date(2026, 1, 1)), (3, dt.date(2026, 1, 2))], "id long, day date")
    previous = spark.conf.get("spark.sql.session.timeZone")
    try:
        for zone in ("UTC", "America/New_York", "Asia/Kolkata"):
            spark.conf.set("spark.sql.session.timeZone", zone)
            assert column(build(spine, [lookup(features)]), "ft__v") == [None, 1, None, 2], zone
            # a date is midnight UTC: 2026-01-01 sees nothing stamped later that day
            assert column(build(dates, [lookup(features)], timestamp_key="day"), "ft__v") == [None, 3], zone
    finally:
        spark.conf.set("spark.sql.session.timeZone", previous)


# ------------------------------------------------------------------------- empty and Delta inputs


def test_empty_feature_table_gives_null_features(spark):
    features = spark.createDataFrame([], FEATURES)
    spine = spark.createDataFrame([(1, T0, "a"), (1, T0, "a")], SPINE)
    result = build(spine, [lookup(features, ("v", "w"))])
    assert rows(result) == [(1, T0.replace(tzinfo=None), "a", None, None)] * 2
    assert result.schema["ft__w"].dataType.simpleString() == "string"


def test_empty_spine_gives_an_empty_result_with_the_full_schema(spark):
    features = spark.createDataFrame([(1, at(hours=-1), None, 1, None)], FEATURES)
    result = build(spark.createDataFrame([], SPINE), [lookup(features, ("v", "w"))])
    assert result.columns == ["id", "ts", "tag", "ft__v", "ft__w"]
    assert result.collect() == []


def test_delta_path_source_with_the_default_prefix(spark, tmp_path):
    path = tmp_path / "customer_daily"
    spark.createDataFrame([(1, at(hours=-1), at(hours=-1), 5, "x")], FEATURES).write.format("delta").save(str(path))
    spine = spark.createDataFrame([(1, T0, "a"), (2, T0, "b")], SPINE)
    source = FeatureLookup(str(path) + "/", ["v", "w"], "id", "feature_ts", ingested_at_key="ingested_at")
    assert source.name == "customer_daily" and source.prefix == "customer_daily__"
    result = build(spine, [source])
    assert result.columns == ["id", "ts", "tag", "customer_daily__v", "customer_daily__w"]
    assert [r[3:] for r in rows(result)] == [(5, "x"), (None, None)]


def test_missing_delta_path_is_a_clear_error(spark, tmp_path):
    spine = spark.createDataFrame([(1, T0, "a")], SPINE)
    missing = FeatureLookup(str(tmp_path / "nowhere"), ["v"], "id", "feature_ts")
    with pytest.raises(FeatureLookupError, match=r"lookup 'nowhere': no Delta table at .*nowhere"):
        build(spine, [missing])


# ----------------------------------------------------------------------------------- errors


def test_lookup_definition_errors(spark):
    frame = spark.createDataFrame([], FEATURES)
    with pytest.raises(FeatureLookupError, match="needs a name"):
        FeatureLookup(frame, ["v"], "id", "feature_ts")
    with pytest.raises(FeatureLookupError, match="needs ingested_at_key"):
        lookup(frame, filter_by_ingested_at=True)
    with pytest.raises(FeatureLookupError, match=r"feature_names \['id'\] are lookup keys"):
        lookup(frame, ("v", "id"))
    with pytest.raises(FeatureLookupError, match="more than once"):
        lookup(frame, ("v", "v"))
    with pytest.raises(FeatureLookupError, match="non-empty list"):
        lookup(frame, ())
    with pytest.raises(FeatureLookupError, match="source must be"):
        lookup(42)
    with pytest.raises(FeatureLookupError, match="not a duration"):
        lookup(frame, lookback_window="1 month")


def test_request_errors_name_the_missing_columns(spark):
    features = spark.createDataFrame([], FEATURES)
    spine = spark.createDataFrame([], SPINE)

    def fails(match, spine_=spine, lookups=None, entity_key="id", timestamp_key="ts"):
        with pytest.raises(FeatureLookupError, match=match):
            build(spine_, lookups or [lookup(features)], entity_key, timestamp_key)

    fails(r"the spine has no column\(s\) \['customer'\] \(entity_key\)", entity_key="customer")
    fails(r"the spine has no column\(s\) \['cutoff'\] \(timestamp_key\)", timestamp_key="cutoff")
    fails("'tag' must be of type timestamp, timestamp_ntz or date, got string", timestamp_key="tag")
    fails(
        r"the spine has no column\(s\) \['store'\] \(lookup_key of lookup 'ft'\)",
        lookups=[lookup(features.withColumnRenamed("id", "store"), lookup_key="store")],
    )
    fails(
        r"feature table of lookup 'ft' has no column\(s\) \['id'\] \(lookup_key\)",
        lookups=[lookup(features.withColumnRenamed("id", "other"))],
    )
    fails(
        r"has no column\(s\) \['nope', 'zip'\] \(unknown feature_names\)",
        lookups=[lookup(features, ("v", "nope", "zip"))],
    )
    fails(r"has no column\(s\) \['when'\] \(timestamp_key\)", lookups=[lookup(features, timestamp_key="when")])
    fails(r"has no column\(s\) \['seen'\] \(ingested_at_key\)", lookups=[lookup(features, ingested_at_key="seen")])
    fails("timestamp_key column 'w' must be of type", lookups=[lookup(features, timestamp_key="w")])
    fails(
        "key column 'id' is bigint in the spine but string in the feature table",
        lookups=[lookup(features.withColumn("id", F.col("id").cast("string")))],
    )
    fails(r"duplicate column names \['ft__v'\]", lookups=[lookup(features), lookup(features)])
    # Spark resolves names case-insensitively: 'TA' + 'G' collides with the spine's 'tag'
    fails(
        r"duplicate column names \['TAG'\]", lookups=[lookup(features.withColumnRenamed("w", "G"), ("G",), prefix="TA")]
    )
    with pytest.raises(FeatureLookupError, match=r"the spine has duplicate column names \['X', 'x'\]"):
        build(spark.sql("SELECT 1L AS id, TIMESTAMP'2026-01-01 00:00:00' AS ts, 1 AS x, 2 AS X"), [lookup(features)])
    with pytest.raises(FeatureLookupError, match="at least one FeatureLookup"):
        build(spine, [])
    with pytest.raises(FeatureLookupError, match=r"column\(s\) \['__pit_t'\]: names starting with '__pit_'"):
        build(spine.withColumn("__pit_t", F.lit(1)), [lookup(features)])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30 days", dt.timedelta(days=30)),
        ("1 day 12 hours", dt.timedelta(days=1, hours=12)),
        ("INTERVAL 7 DAYS", dt.timedelta(days=7)),
        ("90 min", dt.timedelta(minutes=90)),
        ("1.5h", dt.timedelta(hours=1.5)),
        ("2 weeks, 3 seconds", dt.timedelta(weeks=2, seconds=3)),
        ("250 ms 7 us", dt.timedelta(milliseconds=250, microseconds=7)),
        (dt.timedelta(hours=2), dt.timedelta(hours=2)),
        (None, None),
    ],
)
def test_parse_lookback_window(text, expected):
    assert parse_lookback_window(text) == expected


@pytest.mark.parametrize("text", ["", "30", "days", "3 months", "1 year", "-1 day", "30 days ago", 30])
def test_parse_lookback_window_rejects(text):
    with pytest.raises(FeatureLookupError):
        parse_lookback_window(text)


# --------------------------------------------------------------- property: random vs brute force

BASE = dt.datetime(2026, 1, 1, tzinfo=UTC)


def _random_frames(seed: int, composite: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Small frames on a coarse minute grid so that ties and exact boundaries are frequent."""
    rng = np.random.default_rng(seed)

    def maybe(values, p_null):
        return [None if rng.random() < p_null else v for v in values]

    def minutes(n, high, p_null):
        return maybe([BASE + dt.timedelta(minutes=int(m)) for m in rng.integers(0, high, n)], p_null)

    n_features, n_spine = int(rng.integers(0, 40)), int(rng.integers(1, 30))
    features = pd.DataFrame(
        dtype=object,
        data={
            "k1": maybe(rng.integers(0, 4, n_features).tolist(), 0.1),
            "k2": maybe(rng.choice(["a", "b"], n_features).tolist(), 0.1) if composite else None,
            "feature_ts": minutes(n_features, 20, 0.1),
            "v": maybe(rng.integers(0, 1000, n_features).tolist(), 0.2),
            "w": maybe(rng.choice(["x", "y", "z"], n_features).tolist(), 0.2),
        },
    )
    features["ingested_at"] = pd.Series(
        [
            None if ts is None or rng.random() < 0.2 else ts + dt.timedelta(minutes=int(rng.integers(0, 8)))
            for ts in features["feature_ts"]
        ],
        index=features.index,
        dtype=object,
    )
    # one row per (key, feature_ts, ingested_at): exact ties could legitimately return either row
    features = features.drop_duplicates(subset=["k1", "k2", "feature_ts", "ingested_at"]).reset_index(drop=True)
    base = pd.DataFrame(
        dtype=object,
        data={
            "k1": maybe(rng.integers(0, 5, n_spine).tolist(), 0.1),
            "k2": maybe(rng.choice(["a", "b"], n_spine).tolist(), 0.1) if composite else None,
            "ts": minutes(n_spine, 25, 0.1),
            "row": list(range(n_spine)),
        },
    )
    spine = base.sample(n=n_spine + 5, replace=True, random_state=seed).reset_index(drop=True)  # duplicates
    return spine, features


def _brute_force(spine: pd.DataFrame, features: pd.DataFrame, keys, lookback, filtered) -> list[tuple]:
    """The seven rules, literally, one spine row at a time."""
    answers = []
    for _, s in spine.iterrows():
        best, best_rank = (None, None), None
        for _, f in features.iterrows():
            if any(s[k] is None or f[k] is None or s[k] != f[k] for k in keys):
                continue  # rule 1
            if s["ts"] is None or f["feature_ts"] is None or f["feature_ts"] > s["ts"]:
                continue  # rule 2
            if lookback is not None and f["feature_ts"] < s["ts"] - lookback:
                continue  # rule 3
            if filtered and (f["ingested_at"] is None or f["ingested_at"] > s["ts"]):
                continue  # rule 4
            ing = f["ingested_at"]
            rank = (f["feature_ts"], ing is not None, ing or BASE)  # rule 5: NULL lowest
            if best_rank is None or rank > best_rank:
                best, best_rank = (f["v"], f["w"]), rank
        answers.append(best)  # rule 6: NULLs when nothing is eligible
    return answers


def _none(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


@pytest.mark.parametrize("seed", range(10))
def test_random_frames_match_brute_force(spark, seed):
    composite = seed % 2 == 1
    keys = ["k1", "k2"] if composite else ["k1"]
    spine_pd, features_pd = _random_frames(seed, composite)
    spine = spark.createDataFrame(
        [tuple(r) for r in spine_pd[["k1", "k2", "ts", "row"]].itertuples(index=False)],
        "k1 long, k2 string, ts timestamp, row long",
    )
    features = spark.createDataFrame(
        [tuple(r) for r in features_pd[["k1", "k2", "feature_ts", "ingested_at", "v", "w"]].itertuples(index=False)],
        "k1 long, k2 string, feature_ts timestamp, ingested_at timestamp, v long, w string",
    )
    configs = [(None, False), (dt.timedelta(minutes=5), False), (None, True), (dt.timedelta(minutes=3), True)]
    lookups = [
        FeatureLookup(
            features,
            ["v", "w"],
            keys,
            "feature_ts",
            lookback_window=lookback,
            ingested_at_key="ingested_at",
            filter_by_ingested_at=filtered,
            prefix=f"c{i}_",
        )
        for i, (lookback, filtered) in enumerate(configs)
    ]
    expected_spine = [tuple(_none(v) for v in r) for r in spine_pd[["k1", "k2", "ts", "row"]].itertuples(index=False)]
    expected = [_brute_force(spine_pd, features_pd, keys, lb, flt) for lb, flt in configs]
    result = rows(build_training_set(spine, lookups, keys, "ts"))
    assert len(result) == len(expected_spine)
    got_spine = [(r[0], r[1], r[2].replace(tzinfo=UTC) if r[2] else None, r[3]) for r in result]
    assert got_spine == expected_spine
    for i in range(len(configs)):
        got = [(r[4 + 2 * i], r[5 + 2 * i]) for r in result]
        want = [(_none(v), _none(w)) for v, w in expected[i]]
        assert got == want, (seed, configs[i])
