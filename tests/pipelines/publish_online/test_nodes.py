"""publish_online nodes on tiny hand-made frames: the latest row per key as of the publish time
(the point-in-time choice), and the diff against the store's row hashes."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from lakehouse_ml.features.lookup import FeatureLookup
from lakehouse_ml.pipelines.publish_online.nodes import _as_of, _served, changed_rows, latest_rows

UTC = timezone.utc
AS_OF = datetime(2026, 3, 1, tzinfo=UTC)
SCHEMA = "customer_id string, feature_ts timestamp, ingested_at timestamp, orders double"


def _rows(spark, rows):
    return spark.createDataFrame(rows, SCHEMA)


def _lookup(source, filter_by_ingested_at=True) -> FeatureLookup:
    return FeatureLookup(
        source=source,
        feature_names=["orders", "feature_ts", "ingested_at"],
        lookup_key="customer_id",
        timestamp_key="feature_ts",
        ingested_at_key="ingested_at",
        filter_by_ingested_at=filter_by_ingested_at,
        prefix="t__",
    )


def _d(day, hour=0):
    return datetime(2026, 2, day, hour, tzinfo=UTC) if day <= 28 else datetime(2026, 3, day - 28, hour, tzinfo=UTC)


def test_the_latest_row_is_the_one_a_point_in_time_lookup_at_as_of_chooses(spark):
    rows = _rows(
        spark,
        [
            ("a", _d(27), _d(27, 1), 1.0),
            ("a", _d(28), _d(28, 1), 2.0),  # the latest stamped and known: chosen
            ("a", _d(29), _d(28, 1), 3.0),  # stamped exactly at as_of (inclusive): chosen over the above
            ("b", _d(28), _d(28, 1), 4.0),
            ("b", _d(28), _d(28, 2), 5.0),  # same feature_ts, known later: wins the tie
            ("c", _d(28), _d(28, 1), 6.0),
            ("c", _d(29), _d(29, 1), 7.0),  # known after as_of: not yet eligible
            ("d", _d(30), _d(29), 8.0),  # stamped after as_of: no row
            ("e", _d(28), None, 9.0),  # ingested_at unknown: not eligible when filtering
            (None, _d(28), _d(28, 1), 10.0),  # a null key never matches
        ],
    )
    chosen = latest_rows(_lookup(rows), AS_OF).toPandas().set_index("customer_id")["orders"].to_dict()
    assert chosen == {"a": 3.0, "b": 5.0, "c": 6.0}
    # With a lookback, a key whose chosen row is older than it has none (it is never used from as_of on).
    recent = latest_rows(replace(_lookup(rows), lookback_window=timedelta(hours=23)), AS_OF).toPandas()
    assert sorted(recent["customer_id"]) == ["a"]
    unfiltered = (
        latest_rows(_lookup(rows, filter_by_ingested_at=False), AS_OF).toPandas().set_index("customer_id")["orders"]
    )
    assert unfiltered.to_dict() == {"a": 3.0, "b": 5.0, "c": 7.0, "e": 9.0}


def test_only_new_or_different_rows_and_vanished_keys_are_changes(spark):
    rows = _rows(spark, [("a", _d(28), _d(28, 1), 1.0), ("b", _d(28), _d(28, 1), 2.0), ("c", _d(28), _d(28, 1), 3.0)])
    latest = latest_rows(_lookup(rows), AS_OF)
    hashes = latest.select("_key", "_row_hash").toPandas()
    first = changed_rows(latest, hashes.iloc[:0]).toPandas()
    assert sorted(first["_key"]) == ["a", "b", "c"] and not first["_deleted"].any()
    assert changed_rows(latest, hashes).count() == 0
    published = pd.concat(
        [
            hashes.assign(_row_hash=hashes["_row_hash"].where(hashes["_key"] != "b", "old")),
            pd.DataFrame({"_key": ["gone"], "_row_hash": ["x"]}),
        ]
    )
    diff = changed_rows(latest, published).toPandas().set_index("_key")
    assert diff["_deleted"].to_dict() == {"b": False, "gone": True}
    assert diff.loc["b", "orders"] == 2.0


def test_the_default_publish_time_is_the_latest_ingestion_of_the_served_tables(spark):
    first = _rows(spark, [("a", _d(27), _d(28, 1), 1.0), ("b", _d(28), None, 2.0)])
    second = _rows(spark, [("a", _d(30), _d(28, 3), 1.0)])  # stamped later, but known at 03:00 on the 28th
    lookups = [_lookup(first), _lookup(second)]
    assert _as_of({"as_of": None}, lookups) == _d(28, 3)
    assert _as_of({"as_of": "2026-03-01T01:00:00+01:00"}, lookups) == AS_OF
    assert abs(_as_of({"as_of": "now"}, lookups) - datetime.now(UTC)) < timedelta(minutes=1)
    with pytest.raises(ValueError, match="publish_online.as_of must be null, 'now' or a time with a zone"):
        _as_of({"as_of": "2026-03-01"}, lookups)


def test_tables_to_serve_are_checked():
    assert list(_served({"a": {}, "b": {}}, ["b"])) == ["b"]
    with pytest.raises(ValueError, match=r"publish_online.tables: \['x'\] are not tables the training set looks up"):
        _served({"a": {}}, ["x"])
