"""A backfill of several hundred daily deliveries in one run: every file read in one engine scan
(one Spark relation per file overflowed the client's recursion limit at ~550 folders), one audit
row per file, nothing read twice."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from lakehouse_ml.pipelines.ingest.pipeline import create_pipeline
from tests.helpers import run_pipeline, write_landing
from tests.pipelines.ingest.test_pipeline import GATE, read, versions

pytestmark = pytest.mark.slow

START = date(2024, 1, 1)
ORDER_DAYS = 400  # + one empty delivery: 401 orders files
TICKET_DAYS = 200
TICKETS_HEADER = "event_id,customer_id,event_ts,category,severity"


def day(i: int) -> str:
    return (START + timedelta(days=i)).isoformat()


def order(event_id: str, i: int, amount: float = 10.0) -> dict:
    return {
        "event_id": event_id,
        "customer_id": f"c{i % 7}",
        "event_ts": f"{day(i - 1)}T10:00:00Z",
        "amount": amount,
        "currency": "EUR",
        "items": 1,
        "discount": 0.0,
    }


def deliver_orders(root: Path, i: int) -> None:
    lines: list = [order(f"o{i}-a", i), order(f"o{i}-b", i)]
    if i % 50 == 10:
        lines.append(order(f"o{i - 1}-a", i - 1, amount=99.0))  # a corrected re-send: an update
    if i % 50 == 20:
        lines.append(order(f"o{i - 1}-b", i - 1))  # the same record again: a duplicate
    if i % 100 == 30:
        lines.append("{broken")
    path = write_landing(root, "orders", day(i), "orders.jsonl", lines)
    if i == ORDER_DAYS - 1:
        path.write_bytes(path.read_bytes() + b'{"event_id": "bad\xff"}\n')


def deliver_tickets(root: Path, i: int) -> None:
    rows = [f"t{i}-{k},c{k},{day(i - 1)}T0{k}:00:00Z,delivery,low" for k in (1, 2)]
    write_landing(root, "tickets", day(i), "tickets.csv", [TICKETS_HEADER, *rows])


def test_hundreds_of_daily_deliveries_in_one_run_are_audited_per_file_and_never_read_twice(
    tmp_path, monkeypatch, spark
):
    monkeypatch.chdir(tmp_path)
    for i in range(ORDER_DAYS):
        deliver_orders(tmp_path, i)
    write_landing(tmp_path, "orders", day(ORDER_DAYS), "orders.jsonl", [])
    for i in range(TICKET_DAYS):
        deliver_tickets(tmp_path, i)

    run_pipeline(create_pipeline(), runtime_params=GATE)

    audit = read("monitoring/ingest_audit").set_index("batch_id")
    orders_audit = audit[audit["source"] == "orders"]
    assert sorted(orders_audit.index) == sorted(f"orders/{day(i)}/orders" for i in range(ORDER_DAYS + 1))
    assert len(audit[audit["source"] == "tickets"]) == TICKET_DAYS
    assert bool(audit["balanced"].all())
    totals = orders_audit[["bronze_rows", "inserted", "updated", "duplicate", "quarantined"]].sum().tolist()
    assert totals == [2 * ORDER_DAYS + 8 + 8 + 4 + 1, 2 * ORDER_DAYS, 8, 8, 5]
    assert orders_audit.loc[f"orders/{day(60)}/orders", ["bronze_rows", "inserted", "updated"]].tolist() == [3, 2, 1]
    assert orders_audit.loc[f"orders/{day(ORDER_DAYS)}/orders", "bronze_rows"] == 0  # the empty file
    assert orders_audit.loc[f"orders/{day(7)}/orders", "source_file"].endswith(f"orders/{day(7)}/orders.jsonl")
    assert audit[audit["source"] == "tickets"]["bronze_rows"].eq(2).all()  # each file's header dropped

    silver = read("silver/orders").set_index("event_id")
    assert len(silver) == 2 * ORDER_DAYS and silver.loc["o59-a", "amount"] == 99.0
    assert silver.loc["o399-b", "_batch_id"] == f"orders/{day(399)}/orders"
    assert len(read("silver/tickets")) == 2 * TICKET_DAYS
    bronze = read("bronze/orders")
    assert len(bronze) == totals[0]
    assert (bronze["_delivery_date"].astype(str) == bronze["_batch_id"].str.split("/").str[1]).all()
    assert sorted(read("quarantine/orders")["_raw"]) == ['{"event_id": "bad\\xff"}', *["{broken"] * 4]

    first = versions()
    run_pipeline(create_pipeline(), runtime_params=GATE)
    assert versions() == first  # nothing new: no table gets a new version

    deliver_orders(tmp_path, ORDER_DAYS + 1)
    run_pipeline(create_pipeline(), runtime_params=GATE)
    bronze_after = read("bronze/orders")
    assert len(bronze_after) == totals[0] + 2  # only the new delivery was read
    before = bronze.set_index(["_batch_id", "_raw"])["_ingested_at"].sort_index()
    after = bronze_after.set_index(["_batch_id", "_raw"])["_ingested_at"].sort_index()
    pd.testing.assert_series_equal(after.loc[before.index], before)  # earlier batches untouched
    assert len(read("monitoring/ingest_audit")) == ORDER_DAYS + 2 + TICKET_DAYS
