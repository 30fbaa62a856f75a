"""Unit tests of the ingest nodes on tiny hand-made frames (real embedded Spark engine)."""

from __future__ import annotations

import json
import re
from datetime import datetime

import pandas as pd
import pytest
from pyspark.sql import functions as F

from lakehouse_ml.pipelines.ingest.nodes import (
    BRONZE_SCHEMA,
    QuarantineRateExceeded,
    build_daily_activity,
    check_audit,
    classify_records,
    gold_changed_days,
    reconcile_to_silver,
    select_new_deliveries,
    split_batch,
    type_records,
    upserted_rows,
)
from lakehouse_ml.pipelines.ingest.schemas import SCHEMAS, canonical_columns
from tests.helpers import FrameVersions

ORDERS = {"name": "orders", "schema": "orders"}
INGEST = {"full_rebuild": False, "quarantine_gate": {"max_rate": 1.0, "min_rows": 0}}


def order(event_id="e1", customer_id="c1", event_ts="2026-01-01T10:00:00Z", **overrides):
    """One canonical order record as the source would deliver it."""
    record = {
        "event_id": event_id,
        "customer_id": customer_id,
        "event_ts": event_ts,
        "amount": 10.0,
        "currency": "EUR",
        "items": 1,
        "discount": 0.0,
        "delivered_at": "2026-01-02T02:00:00Z",
    }
    record.update(overrides)
    return record


def bronze_rows(spark, lines, delivery="2026-01-02", file_format="json", header=None, source="orders"):
    """Bronze rows for raw lines of one delivered file."""
    batch = f"{source}/{delivery}/{source}"
    rows = [
        (
            line if isinstance(line, str) else json.dumps(line),
            file_format,
            header,
            f"landing/{batch}",
            None,
            source,
            pd.Timestamp(delivery).date(),
            batch,
            pd.Timestamp("2026-01-02", tz="UTC"),
        )
        for line in lines
    ]
    return spark.createDataFrame(rows, BRONZE_SCHEMA)


def failures(spark, lines, source=ORDERS, **kwargs):
    """The failed checks per record, in input order of event ids."""
    typed = type_records(bronze_rows(spark, lines, **kwargs), source)
    return [row["_failed_checks"] for row in typed.orderBy("_raw").collect()]


def test_select_new_deliveries_skips_ingested_batches_unless_full_rebuild():
    ids = ["2026-01-03/orders", "2026-01-01/orders", "2026-01-02/orders"]
    done = {"orders/2026-01-01/orders"}
    assert select_new_deliveries(ids, done, "orders", False) == ["2026-01-02/orders", "2026-01-03/orders"]
    assert select_new_deliveries(ids, done, "orders", True) == sorted(ids)


def test_clean_json_order_is_typed_and_passes(spark):
    typed = type_records(bronze_rows(spark, [order(amount="12.50", items="2")]), ORDERS).collect()[0]
    assert typed["_failed_checks"] == []
    assert typed["amount"] == 12.5 and typed["items"] == 2
    assert typed["event_ts"] == pd.Timestamp("2026-01-01 10:00:00").to_pydatetime()


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (order(customer_id=None), ["customer_id: expected a value, got null"]),
        (order(event_id=""), ["event_id: expected a value, got null"]),
        (
            order(amount=-5.0, discount=0.0),
            [
                "amount: expected >= 0, got -5.0",
                "discount_not_above_amount: expected discount <= amount, got discount=0.0, amount=-5.0",
            ],
        ),
        (order(event_ts="13/45/2026 25:61"), ["event_ts: expected timestamp, got 13/45/2026 25:61"]),
        (
            order(event_ts="2026-01-09T10:00:00Z"),
            [
                "event_ts_not_after_delivery: expected event_ts at most 1 hour after delivered_at, got "
                "event_ts=2026-01-09 10:00:00, delivered_at=2026-01-02 02:00:00"
            ],
        ),
        (order(items="two"), ["items: expected bigint, got two"]),
        (order(currency="XYZ"), ["currency: expected one of ['CHF', 'EUR', 'GBP', 'PLN', 'SEK', 'USD'], got XYZ"]),
    ],
    ids=["null_key", "empty_key", "negative_amount", "unparseable_ts", "future_ts", "bad_int", "bad_currency"],
)
def test_each_fault_is_reported_with_field_expectation_and_value(spark, record, expected):
    assert failures(spark, [record]) == [expected]


def test_malformed_json_line_is_reported(spark):
    assert failures(spark, ['{"event_id": "e1", "amount": 3']) == [["_raw: expected a valid JSON record"]]


def test_late_arrival_is_valid_and_keeps_its_event_time(spark):
    typed = type_records(bronze_rows(spark, [order(event_ts="2025-12-25T08:00:00Z")]), ORDERS).collect()[0]
    assert typed["_failed_checks"] == []
    assert typed["event_ts"].date().isoformat() == "2025-12-25"


def test_extra_column_is_listed_not_fatal(spark):
    typed = type_records(bronze_rows(spark, [order(channel_ref="x")]), ORDERS).collect()[0]
    assert typed["_failed_checks"] == []
    assert typed["_unexpected_columns"] == ["channel_ref"]


def test_csv_lines_parse_by_their_header_with_quotes_and_wrong_field_counts(spark):
    header = "event_id,customer_id,event_ts,category,severity,delivered_at"
    lines = [
        't1,c1,2026-01-01T10:00:00Z,"billing, refunds",high,2026-01-02T02:00:00Z',
        "t2,c1,2026-01-01T10:00:00Z,billing",
    ]
    tickets = {"name": "tickets", "schema": "tickets"}
    typed = type_records(bronze_rows(spark, lines, file_format="csv", header=header, source="tickets"), tickets)
    rows = {row["_raw"][:2]: row for row in typed.collect()}
    assert rows["t1"]["category"] == "billing, refunds" and rows["t1"]["_failed_checks"] == []
    assert rows["t2"]["_failed_checks"] == ["_raw: expected a valid CSV record"]


def test_column_mapping_timestamp_format_zone_and_defaults(spark):
    source = {
        "name": "orders",
        "schema": "orders",
        "column_mapping": {
            "OrderNo": "event_id",
            "Kunde": "customer_id",
            "Datum": "event_ts",
            "Betrag": "amount",
            "Stueck": "items",
            "Rabatt": "discount",
        },
        "timestamp_format": "dd.MM.yyyy HH:mm",
        "timezone": "Europe/Berlin",
        "defaults": {"currency": "EUR"},
    }
    record = {
        "OrderNo": "A-1",
        "Kunde": "K-9",
        "Datum": "31.01.2026 13:30",
        "Betrag": "19.90",
        "Stueck": "3",
        "Rabatt": "0",
    }
    typed = type_records(bronze_rows(spark, [record], delivery="2026-02-01"), source).collect()[0]
    assert typed["_failed_checks"] == []
    assert (typed["event_id"], typed["customer_id"], typed["currency"]) == ("A-1", "K-9", "EUR")
    # 13:30 in Berlin (UTC+1 in winter) is 12:30 UTC; delivered_at defaults to the delivery day.
    assert typed["event_ts"] == pd.Timestamp("2026-01-31 12:30").to_pydatetime()
    assert typed["delivered_at"] == pd.Timestamp("2026-02-01 00:00").to_pydatetime()


def test_default_fills_only_missing_values_never_unparseable_ones(spark):
    source = {**ORDERS, "defaults": {"currency": "EUR"}}
    assert failures(spark, [order(delivered_at="soon", currency=None)], source=source) == [
        ["delivered_at: expected timestamp, got soon"]
    ]


# ---------------------------------------------------------------- sources without an event id


CDNOW = {  # a transaction log like CDNOW's: no order id, a date-only time, one history file
    "name": "orders",
    "schema": "orders",
    "column_mapping": {"customer": "customer_id", "date": "event_ts", "cds": "items", "dollars": "amount"},
    "timestamp_format": "yyyyMMdd",
    "defaults": {"currency": "USD", "discount": 0.0},
}
CDNOW_HEADER = "customer,date,cds,dollars"


def cdnow(spark, lines, source, delivery="2026-01-02"):
    typed = type_records(bronze_rows(spark, lines, delivery=delivery, file_format="csv", header=CDNOW_HEADER), source)
    return typed.orderBy("_raw").collect()


def test_a_hash_of_chosen_fields_identifies_events_equal_in_their_typed_values(spark):
    source = {**CDNOW, "event_id_from": {"hash": ["customer_id", "event_ts", "items", "amount"]}}
    rows = cdnow(spark, ["00002,19970112,1,12.00", "00002,19970112,1,12.0", "00002,19970112,5,77.00"], source)
    assert [row["_failed_checks"] for row in rows] == [[], [], []]
    # "12.00" and "12.0" are the same typed record, hence one event; the 5-CD order is another.
    assert rows[0]["event_id"] == rows[1]["event_id"] != rows[2]["event_id"]
    assert len(rows[0]["event_id"]) == 32
    again = cdnow(spark, ["00002,19970112,1,12.00"], source, delivery="2026-02-01")  # redelivered later
    assert again[0]["event_id"] == rows[0]["event_id"]


def test_line_in_file_ids_tell_identical_lines_apart_and_are_stable_per_file(spark):
    source = {**CDNOW, "event_id_from": "line_in_file"}
    lines = ["00002,19970112,1,12.00", "00002,19970112,1,12.00", "00003,19970102,2,20.76"]
    ids = [row["event_id"] for row in cdnow(spark, lines, source)]
    assert len(set(ids)) == 3 and all(row is not None for row in ids)
    assert sorted(ids) == sorted(row["event_id"] for row in cdnow(spark, list(reversed(lines)), source))
    elsewhere = {row["event_id"] for row in cdnow(spark, lines, source, delivery="2026-03-01")}
    assert not elsewhere & set(ids)  # the same record in another file is another event


@pytest.mark.parametrize(
    ("how", "message"),
    [
        (
            {"hash": ["customer_id", "colour"]},
            "ingest.sources.orders.event_id_from: expected 'column', 'line_in_file' or {hash: [<canonical fields>]} with fields among",
        ),
        ({"hash": []}, "ingest.sources.orders.event_id_from: expected"),
        ("row_number", "ingest.sources.orders.event_id_from: expected"),
    ],
)
def test_an_unknown_event_id_derivation_is_refused_naming_the_setting(spark, how, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        cdnow(spark, ["00002,19970112,1,12.00"], {**CDNOW, "event_id_from": how})


def test_without_a_derivation_a_missing_event_id_is_quarantined(spark):
    assert cdnow(spark, ["00002,19970112,1,12.00"], CDNOW)[0]["_failed_checks"] == [
        "event_id: expected a value, got null"
    ]


def test_known_at_event_time_plus_a_lag_replaces_the_folder_date_of_a_history_export(spark):
    source = {**CDNOW, "event_id_from": "line_in_file", "known_at": {"event_time_plus": "1 day"}}
    row = cdnow(spark, ["00002,19970112,1,12.00"], source, delivery="2026-01-02")[0]
    assert row["_failed_checks"] == []
    assert row["event_ts"] == pd.Timestamp("1997-01-12").to_pydatetime()
    assert row["delivered_at"] == pd.Timestamp("1997-01-13").to_pydatetime()  # not the 2026 folder date
    # The policy wins over a delivered_at the record carries.
    typed = type_records(
        bronze_rows(spark, [order()]), {**ORDERS, "known_at": {"event_time_plus": "2 hours"}}
    ).collect()[0]
    assert typed["delivered_at"] == pd.Timestamp("2026-01-01 12:00").to_pydatetime()


def test_known_at_from_a_column_of_the_record(spark):
    source = {**ORDERS, "known_at": {"column": "booked_at"}}
    rows = type_records(bronze_rows(spark, [order(booked_at="2026-01-01T11:00:00Z"), order(event_id="e2")]), source)
    got = {row["event_id"]: row for row in rows.collect()}
    assert got["e1"]["delivered_at"] == pd.Timestamp("2026-01-01 11:00").to_pydatetime()
    assert got["e1"]["_failed_checks"] == [] and got["e1"]["_unexpected_columns"] == []
    # A record without it is quarantined: it would otherwise count as known at the wrong time.
    assert got["e2"]["_failed_checks"] == ["delivered_at: expected a value, got null"]


def test_whitespace_and_semicolon_delimited_exports_parse_by_their_header(spark):
    source = {**CDNOW, "event_id_from": "line_in_file", "delimiter": "whitespace"}
    bronze = bronze_rows(
        spark, [" 00002 19970112  5   77.00"], file_format="csv", header=" customer date cds   dollars"
    )
    row = type_records(bronze, source).collect()[0]
    assert row["_failed_checks"] == [] and (row["customer_id"], row["items"], row["amount"]) == ("00002", 5, 77.0)
    bronze = bronze_rows(spark, ['00002;19970112;5;"77.00"'], file_format="csv", header="customer;date;cds;dollars")
    assert type_records(bronze, {**source, "delimiter": ";"}).collect()[0]["amount"] == 77.0
    with pytest.raises(ValueError, match=re.escape("ingest.sources.orders.delimiter: expected one character")):
        type_records(bronze, {**source, "delimiter": "::"})


@pytest.mark.parametrize(
    "policy", [{"event_time_plus": "-1 day"}, {"event_time_plus": "soon"}, "event_time", {"column": 3}]
)
def test_an_unknown_known_at_policy_is_refused_naming_the_setting(spark, policy):
    with pytest.raises(
        ValueError, match=re.escape("ingest.sources.orders.known_at: expected 'delivery', {column: <your column>} or")
    ):
        type_records(bronze_rows(spark, [order()]), {**ORDERS, "known_at": policy})


EMPTY_SILVER = "event_id string, event_ts timestamp, _record_hash string, _batch_id string"


def _classify(spark, lines_by_delivery, silver=None):
    """Classify deliveries against silver; return (all classified rows, the upserts)."""
    typed = None
    for delivery, lines in lines_by_delivery.items():
        frame = type_records(bronze_rows(spark, lines, delivery=delivery), ORDERS)
        typed = frame if typed is None else typed.unionByName(frame)
    current = silver if silver is not None else spark.createDataFrame([], EMPTY_SILVER)
    classified = classify_records(typed, current, canonical_columns(SCHEMAS["orders"]))
    return classified, classified.filter("_upsert")


@pytest.mark.slow  # ~7 s of engine CPU
def test_dedupe_labels_duplicates_corrections_and_inserts(spark):
    outcomes, upserts = _classify(
        spark,
        {
            "2026-01-02": [order("e1"), order("e1"), order("e2")],
            "2026-01-03": [order("e1", amount=12.0, delivered_at="2026-01-03T02:00:00Z"), order("e2")],
        },
    )
    counts = {r["_outcome"]: r["count"] for r in outcomes.groupBy("_outcome").count().collect()}
    # e1: insert, exact duplicate, corrected re-send (update); e2: insert, re-sent unchanged (duplicate)
    assert counts == {"inserted": 2, "duplicate": 2, "updated": 1}
    winners = {r["event_id"]: (r["amount"], r["_new"]) for r in upserts.collect()}
    assert winners == {"e1": (12.0, True), "e2": (10.0, True)}  # latest delivery wins; silver holds neither


@pytest.mark.slow  # ~5 s of engine CPU
def test_dedupe_against_existing_silver(spark):
    _, first = _classify(spark, {"2026-01-02": [order("e1"), order("e2")]})
    silver = first.select("event_id", "event_ts", "_record_hash", "_batch_id")
    silver = spark.createDataFrame(silver.collect(), EMPTY_SILVER)
    outcomes, upserts = _classify(spark, {"2026-01-05": [order("e1"), order("e2", amount=99.0), order("e3")]}, silver)
    labels = sorted(r["_outcome"] for r in outcomes.collect())
    assert labels == ["duplicate", "inserted", "updated"]
    # Unchanged e1 is not rewritten; e3, which silver does not hold, is appended, e2 MERGEd.
    assert sorted((r["event_id"], r["_new"]) for r in upserts.collect()) == [("e2", False), ("e3", True)]


@pytest.mark.slow  # ~5 s of engine CPU
def test_reconcile_balances_every_batch(spark):
    lines = [order("e1"), order("e1"), "{oops", order("e2", event_ts="2025-12-30T09:00:00Z"), order("e3", amount=-1.0)]
    bronze = bronze_rows(spark, lines)
    batch = ["orders/2026-01-02/orders"]
    typed = type_records(bronze, ORDERS)
    quarantine, classified = split_batch(typed, FrameVersions([], EMPTY_SILVER), batch, ORDERS, INGEST)
    upserts, _, audit = reconcile_to_silver(classified, quarantine, bronze, batch, ORDERS, INGEST)
    row = audit.iloc[0]
    assert (row.bronze_rows, row.inserted, row.updated, row.duplicate, row.quarantined) == (5, 2, 0, 1, 2)
    assert bool(row.balanced) and row.quarantine_rate == pytest.approx(0.4)
    assert "_raw (1)" in row.top_failed_checks and "amount (1)" in row.top_failed_checks
    assert sorted(r["_new"] for r in upserts.collect()) == [True, True]
    # A work table written before `_new` existed: every upsert goes through the MERGE.
    upserts, _, _ = reconcile_to_silver(classified.drop("_new"), quarantine, bronze, batch, ORDERS, INGEST)
    assert sorted(r["_new"] for r in upserts.collect()) == [False, False]


@pytest.mark.slow  # ~14 s of engine CPU (the walk back over silver's versions)
def test_a_batch_retried_after_its_silver_commit_is_classified_as_before_it(spark):
    """Killed between silver's MERGE and the audit row: the retry must not call its own rows duplicates."""
    batch = ["orders/2026-01-05/orders"]
    bronze = bronze_rows(spark, [order("e1", amount=12.0), order("e2")], delivery="2026-01-05")
    before = spark.createDataFrame(
        [("e1", datetime(2026, 1, 1, 10), "old-hash", "orders/2026-01-02/orders")], EMPTY_SILVER
    )
    _, classified = split_batch(
        type_records(bronze, ORDERS), FrameVersions([before], EMPTY_SILVER), batch, ORDERS, INGEST
    )
    written = classified.filter("_upsert").select("event_id", "event_ts", "_record_hash", "_batch_id")
    after_crash = FrameVersions([before, written], EMPTY_SILVER)
    _, retried = split_batch(type_records(bronze, ORDERS), after_crash, batch, ORDERS, INGEST)
    outcomes = {r["event_id"]: (r["_outcome"], r["_upsert"]) for r in retried.collect()}
    assert outcomes == {"e1": ("updated", True), "e2": ("inserted", True)}
    # The first attempt appended e2 as new; the retry MERGEs it, which finds the row it wrote.
    assert {r["event_id"]: r["_new"] for r in classified.filter("_upsert").collect()} == {"e1": False, "e2": True}
    assert {r["_new"] for r in retried.collect()} == {False}
    # Without the walk back, the same rows against the crashed silver are duplicates.
    naive = classify_records(type_records(bronze, ORDERS), written, canonical_columns(SCHEMAS["orders"]))
    assert {r["_outcome"] for r in naive.collect()} == {"duplicate"}


def test_quarantine_gate_names_batch_rate_and_top_checks():
    audit = pd.DataFrame(
        [
            {
                "batch_id": "orders/2026-01-02/orders",
                "bronze_rows": 10,
                "quarantined": 4,
                "quarantine_rate": 0.4,
                "balanced": True,
                "top_failed_checks": "amount (3), _raw (1)",
            }
        ]
    )
    with pytest.raises(QuarantineRateExceeded) as error:
        check_audit(audit, {"max_rate": 0.05, "min_rows": 0})
    message = str(error.value)
    assert "orders/2026-01-02/orders: 4/10 quarantined (40.0%)" in message
    assert "amount (3), _raw (1)" in message and "5.0%" in message
    check_audit(audit, {"max_rate": 0.05, "min_rows": 11})  # too small a batch to judge by rate


def test_unbalanced_batch_fails():
    audit = pd.DataFrame(
        [
            {
                "batch_id": "b",
                "bronze_rows": 3,
                "quarantined": 0,
                "quarantine_rate": 0.0,
                "balanced": False,
                "top_failed_checks": "",
            }
        ]
    )
    with pytest.raises(RuntimeError, match="reconciliation failed .* b"):
        check_audit(audit, {"max_rate": 1.0})


def _events(spark, rows, schema):
    """Silver-like events: string times in the schema become timestamps."""
    frame = spark.createDataFrame(rows, schema)
    for column in ("event_ts", "delivered_at"):
        frame = frame.withColumn(column, F.to_timestamp(column))
    return frame


ORDER_EVENTS = (
    "event_id string, customer_id string, event_ts string, amount double, discount double, items long, "
    "currency string, delivered_at string, _record_hash string"
)
SESSION_EVENTS = "event_id string, customer_id string, event_ts string, duration_s long, pages long, delivered_at string, _record_hash string"
TICKET_EVENTS = (
    "event_id string, customer_id string, event_ts string, severity string, delivered_at string, _record_hash string"
)
GOLD = {"fx_to_eur": {"EUR": 1.0, "USD": 0.5}}
EMPTY_GOLD = "customer_id string, activity_date date"


def test_daily_activity_aggregates_sources_per_customer_day_in_eur(spark):
    c2 = ("o3", "c2", "2026-01-02 09:00:00", 5.0, 0.0, 1, "EUR", "2026-01-03 02:00:00", "h3")
    first = _events(
        spark, [("o1", "c1", "2026-01-01 10:00:00", 10.0, 2.0, 1, "EUR", "2026-01-02 02:00:00", "h1"), c2], ORDER_EVENTS
    )
    orders = _events(
        spark,
        [
            ("o1", "c1", "2026-01-01 10:00:00", 10.0, 2.0, 1, "EUR", "2026-01-02 02:00:00", "h1"),
            ("o2", "c1", "2026-01-01 18:00:00", 20.0, 0.0, 2, "USD", "2026-01-04 02:00:00", "h2"),
            c2,
        ],
        ORDER_EVENTS,
    )
    sessions = _events(
        spark,
        [
            ("s1", "c1", "2026-01-01 09:00:00", 60, 3, "2026-01-05 02:00:00", "h4"),
            ("s2", "c3", "2026-01-01 09:00:00", 30, 1, "2026-01-02 02:00:00", "h5"),
        ],
        SESSION_EVENTS,
    )
    tickets = _events(spark, [("t1", "c1", "2026-01-01 12:00:00", "high", "2026-01-02 02:00:00", "h6")], TICKET_EVENTS)
    # Gold reflects orders version 0 and nothing of sessions and tickets yet.
    gold_table = FrameVersions([], EMPTY_GOLD, {"lakehouse_ml.gold.source_versions": json.dumps({"orders": 0})})
    rows, stamp = build_daily_activity(
        FrameVersions([first, orders], ORDER_EVENTS),
        FrameVersions([sessions], SESSION_EVENTS),
        FrameVersions([tickets], TICKET_EVENTS),
        gold_table,
        GOLD,
        INGEST,
    )
    collected = rows.collect()
    # Only 2026-01-01 changed: its rows replace the day's (2026-01-02 is left as it is).
    assert [str(r["activity_date"]) for r in collected if r["_deleted"]] == ["2026-01-01"]
    rows = {(r["customer_id"], str(r["activity_date"])): r.asDict() for r in collected if not r["_deleted"]}
    assert set(rows) == {("c1", "2026-01-01"), ("c3", "2026-01-01")}
    c1 = rows[("c1", "2026-01-01")]
    # 10 EUR + 20 USD * 0.5 = 20 gross; net = (10 - 2) + 20 * 0.5 = 18
    assert (c1["orders"], c1["items"], c1["gross_amount_eur"], c1["net_amount_eur"]) == (2, 3, 20.0, 18.0)
    assert (c1["sessions"], c1["session_seconds"], c1["tickets"], c1["high_severity_tickets"]) == (1, 60, 1, 1)
    # the day was complete only once the late session arrived on Jan 5
    assert c1["last_delivered_at"] == pd.Timestamp("2026-01-05 02:00:00").to_pydatetime()
    assert rows[("c3", "2026-01-01")]["orders"] == 0 and not c1["_deleted"]
    assert json.loads(stamp["properties"]["lakehouse_ml.gold.source_versions"]) == {
        "orders": 1,
        "sessions": 0,
        "tickets": 0,
    }


def test_daily_activity_empties_customer_days_that_no_longer_have_events(spark):
    """An order corrected to another day empties its old day: both days are replaced, the old
    one by nothing (its marker)."""
    before = _events(
        spark, [("o1", "c1", "2026-01-01 10:00:00", 10.0, 0.0, 1, "EUR", "2026-01-02 02:00:00", "h1")], ORDER_EVENTS
    )
    after = _events(
        spark, [("o1", "c1", "2026-01-03 10:00:00", 10.0, 0.0, 1, "EUR", "2026-01-04 02:00:00", "h2")], ORDER_EVENTS
    )
    existing = spark.createDataFrame([("c1", datetime(2026, 1, 1).date())], EMPTY_GOLD)
    reflected = {"lakehouse_ml.gold.source_versions": json.dumps({"orders": 0, "sessions": 0, "tickets": 0})}
    rows, _ = build_daily_activity(
        FrameVersions([before, after], ORDER_EVENTS),
        FrameVersions([_events(spark, [], SESSION_EVENTS)], SESSION_EVENTS),
        FrameVersions([_events(spark, [], TICKET_EVENTS)], TICKET_EVENTS),
        FrameVersions([existing], EMPTY_GOLD, reflected),
        GOLD,
        INGEST,
    )
    # Markers name a day only (no customer).
    assert sorted((str(r["activity_date"]), r["_deleted"], r["customer_id"] or "") for r in rows.collect()) == [
        ("2026-01-01", True, ""),
        ("2026-01-03", False, "c1"),
        ("2026-01-03", True, ""),
    ]


SILVER_ROWS = (
    "event_id string, event_ts string, delivered_at string, _record_hash string, _batch_id string, _ingested_at string"
)


def _silver(spark, rows):
    frame = spark.createDataFrame(rows, SILVER_ROWS)
    for column in ("event_ts", "delivered_at", "_ingested_at"):
        frame = frame.withColumn(column, F.to_timestamp(column))
    return frame


def _upserted_versions(spark):
    """Silver before and after an append and a MERGE: e1 untouched; e2 corrected to another day;
    e3 new; e4 new from a run whose clock was set back (landed "before" every row of before); e5
    moved to another day by its batch landed again (a retry), at an earlier clock time too."""
    b2, b3, b5, b6 = (f"orders/2026-01-0{day}/a.jsonl" for day in (2, 3, 5, 6))
    e1 = ("e1", "2026-01-01 10:00:00", "2026-01-02 02:00:00", "h1", b2, "2026-01-02 03:00:00")
    before = [
        e1,
        ("e2", "2026-01-02 10:00:00", "2026-01-03 02:00:00", "h2", b3, "2026-01-03 03:00:00"),
        ("e5", "2026-01-07 10:00:00", "2026-01-02 02:00:00", "h5", b2, "2026-01-02 03:00:00"),
    ]
    after = [
        e1,
        ("e2", "2026-01-03 10:00:00", "2026-01-05 02:00:00", "h2b", b5, "2026-01-05 03:00:00"),
        ("e3", "2026-01-04 10:00:00", "2026-01-05 02:00:00", "h3", b5, "2026-01-05 03:00:00"),
        ("e4", "2026-01-06 10:00:00", "2026-01-06 02:00:00", "h4", b6, "2026-01-01 00:00:00"),
        ("e5", "2026-01-08 10:00:00", "2026-01-02 02:00:00", "h5b", b2, "2026-01-01 00:00:00"),
    ]
    return _silver(spark, before), _silver(spark, after)


CHANGED_DAYS = ["2026-01-02", "2026-01-03", "2026-01-04", "2026-01-06", "2026-01-07", "2026-01-08"]


def test_upserted_rows_are_the_rows_landed_since_and_the_rows_they_replaced(spark):
    before, after = _upserted_versions(spark)

    changed = upserted_rows(before, after).select(F.to_date("event_ts").alias("d")).collect()

    # e2 and e5 on both their days, e3 and e4; never e1's day (2026-01-01).
    assert sorted(str(r["d"]) for r in changed) == CHANGED_DAYS


@pytest.mark.parametrize("upserts", [True, False], ids=["rows landed since", "diff of the versions"])
def test_gold_changed_days_are_the_same_from_the_upserts_as_from_a_diff(spark, upserts):
    before, after = _upserted_versions(spark)
    silver = {"orders": FrameVersions([before, after], SILVER_ROWS, upserts=upserts)}

    days = gold_changed_days(silver, {"orders": 0}, full_rebuild=False).collect()

    assert [str(r["activity_date"]) for r in days] == CHANGED_DAYS


def test_gold_changed_days_count_a_removed_event_when_silver_was_not_only_upserted(spark):
    """A commit that deleted rows (a rebuild, a DELETE by hand) takes the diff: e1's day counts."""
    before, after = _upserted_versions(spark)
    silver = {"orders": FrameVersions([before, after.filter("event_id != 'e1'")], SILVER_ROWS)}

    days = gold_changed_days(silver, {"orders": 0}, full_rebuild=False).collect()

    assert "2026-01-01" in [str(r["activity_date"]) for r in days]
