"""The ingest pipeline on the project's real catalog, run twice, incrementally, rebuilt, and on
a user's own CSV source configured only through conf/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lakehouse_ml.lakehouse import table_version
from lakehouse_ml.pipelines.ingest.pipeline import create_pipeline
from lakehouse_ml.pipelines.ingest.schemas import SCHEMAS
from tests.helpers import PROJECT_ROOT, run_pipeline, write_landing

LAKE = Path("data/lakehouse/dev")
TABLES = [
    "bronze/orders",
    "silver/orders",
    "quarantine/orders",
    "monitoring/ingest_audit",
    "gold/customer_daily_activity",
    "silver/sessions",
    "silver/customers",
    "silver/tickets",
]
GATE = {"ingest": {"quarantine_gate": {"max_rate": 0.5, "min_rows": 0}}}
HINT = " (a source in another encoding sets the landing dataset's `encoding`)"


def order(event_id, customer_id="c1", event_ts="2026-01-01T10:00:00Z", amount=10.0, delivered="2026-01-02"):
    return {
        "event_id": event_id,
        "customer_id": customer_id,
        "event_ts": event_ts,
        "amount": amount,
        "currency": "EUR",
        "items": 1,
        "discount": 0.0,
        "delivered_at": f"{delivered}T02:00:00Z",
    }


def read(table: str) -> pd.DataFrame:
    from lakehouse_ml.datasets import PandasDeltaDataset

    return PandasDeltaDataset(filepath=str(LAKE / table)).load()


def versions() -> dict[str, int | None]:
    return {table: table_version(str(LAKE / table)) for table in TABLES}


@pytest.fixture
def project_dir(tmp_path, monkeypatch, spark):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_orders_only_run_is_idempotent_and_incremental(project_dir):
    write_landing(project_dir, "orders", "2026-01-02", "orders.jsonl", [order("e1"), order("e1"), order("e2", "c2")])
    run_pipeline(create_pipeline(), runtime_params=GATE)
    first = versions()
    assert read("silver/orders")["event_id"].tolist() == ["e1", "e2"] or sorted(read("silver/orders")["event_id"]) == [
        "e1",
        "e2",
    ]
    assert len(read("silver/sessions")) == 0  # optional sources without files: empty tables, no failure
    SCHEMAS["orders"].validate(read("silver/orders"))  # the pandera schema the Spark checks came from

    run_pipeline(create_pipeline(), runtime_params=GATE)
    assert versions() == first  # nothing new delivered: no table gets a new version
    assert len(read("bronze/orders")) == 3

    write_landing(
        project_dir,
        "orders",
        "2026-01-03",
        "orders.jsonl",
        [
            order("e2", "c2", amount=11.0, delivered="2026-01-03"),
            order("e3", event_ts="2026-01-02T08:00:00Z", delivered="2026-01-03"),
        ],
    )
    run_pipeline(create_pipeline(), runtime_params=GATE)
    silver = read("silver/orders").set_index("event_id")
    assert sorted(silver.index) == ["e1", "e2", "e3"] and silver.loc["e2", "amount"] == 11.0
    audit = read("monitoring/ingest_audit").set_index("batch_id")
    assert audit.loc[
        "orders/2026-01-03/orders", ["bronze_rows", "inserted", "updated", "duplicate", "quarantined"]
    ].tolist() == [2, 1, 1, 0, 0]
    assert audit["balanced"].all()
    assert len(read("bronze/orders")) == 5  # the first delivery was not read again
    gold = read("gold/customer_daily_activity").set_index(["customer_id", "activity_date"]).sort_index()
    assert gold["orders"].sum() == 3 and gold.loc[("c2", pd.Timestamp("2026-01-01").date()), "gross_amount_eur"] == 11.0


def test_full_rebuild_reingests_everything_to_the_same_contents(project_dir):
    write_landing(project_dir, "orders", "2026-01-02", "orders.jsonl", [order("e1"), order("e2", "c2"), "{broken"])
    write_landing(
        project_dir, "orders", "2026-01-03", "orders.jsonl", [order("e1", amount=12.0, delivered="2026-01-03")]
    )
    run_pipeline(create_pipeline(), runtime_params=GATE)
    before = {
        t: read(t).drop(columns=["_ingested_at", "_updated_at"], errors="ignore")
        for t in ["silver/orders", "quarantine/orders", "gold/customer_daily_activity"]
    }
    bronze_version = table_version(str(LAKE / "bronze/orders"))

    run_pipeline(create_pipeline(), runtime_params={**GATE, "ingest": {**GATE["ingest"], "full_rebuild": True}})
    assert table_version(str(LAKE / "bronze/orders")) > bronze_version
    assert len(read("bronze/orders")) == 4  # overwritten, not appended twice
    for table, frame in before.items():
        after = read(table).drop(columns=["_ingested_at", "_updated_at"], errors="ignore")
        key = [c for c in ("event_id", "_raw", "customer_id", "activity_date") if c in after.columns][:2]
        pd.testing.assert_frame_equal(
            after.sort_values(key).reset_index(drop=True)[sorted(after.columns)],
            frame.sort_values(key).reset_index(drop=True)[sorted(frame.columns)],
            check_dtype=False,
        )


def test_quarantine_rate_gate_fails_but_keeps_rejected_rows_and_retries_cleanly(project_dir):
    write_landing(
        project_dir, "orders", "2026-01-02", "orders.jsonl", [order("e1"), "{x", "{y", order("e2", amount=-2.0)]
    )
    with pytest.raises(
        Exception, match=r"orders/2026-01-02/orders: 3/4 quarantined \(75.0%\); top failing checks: _raw \(2\)"
    ):
        run_pipeline(
            create_pipeline(), runtime_params={"ingest": {"quarantine_gate": {"max_rate": 0.5, "min_rows": 0}}}
        )
    assert len(read("quarantine/orders")) == 3  # the evidence is kept
    assert table_version(str(LAKE / "silver/orders")) is None  # nothing merged
    # After the operator raises the limit, the same delivery is ingested once, with no duplicates.
    run_pipeline(create_pipeline(), runtime_params={"ingest": {"quarantine_gate": {"max_rate": 0.9, "min_rows": 0}}})
    assert len(read("quarantine/orders")) == 3 and len(read("bronze/orders")) == 4
    assert read("silver/orders")["event_id"].tolist() == ["e1"]


def test_bring_your_own_orders_csv_through_configuration_only(project_dir):
    """A user's CSV with their own column names, a German date format and local time."""
    conf = project_dir / "conf"
    shutil.copytree(PROJECT_ROOT / "conf" / "base", conf / "base")
    (conf / "local").mkdir()
    (conf / "byo").mkdir()
    (conf / "byo" / "catalog.yml").write_text(
        yaml.safe_dump(
            {
                "orders_landing@spark": {
                    "type": "lakehouse_ml.datasets.LandingDataset",
                    "path": "shop_exports/orders",
                    "filename_suffix": ".csv",
                    "dataset": {"type": "lakehouse_ml.datasets.LandingFileDataset", "file_format": "csv"},
                },
            }
        )
    )
    (conf / "byo" / "parameters_ingest.yml").write_text(
        yaml.safe_dump(
            {
                "ingest": {
                    "sources": {
                        "orders": {
                            "name": "orders",
                            "schema": "orders",
                            "timestamp_format": "dd.MM.yyyy HH:mm",
                            "timezone": "Europe/Berlin",
                            "column_mapping": {
                                "Bestellnummer": "event_id",
                                "Kunde": "customer_id",
                                "Bestellzeit": "event_ts",
                                "Betrag": "amount",
                                "Artikel": "items",
                                "Rabatt": "discount",
                            },
                            "defaults": {"currency": "EUR"},
                        }
                    }
                }
            }
        )
    )
    folder = project_dir / "shop_exports" / "orders" / "2026-02-01"
    folder.mkdir(parents=True)
    (folder / "export.csv").write_text(
        "Bestellnummer,Kunde,Bestellzeit,Betrag,Artikel,Rabatt\n"
        'B-1,K-7,31.01.2026 13:30,"19.90",2,0\n'
        "B-2,K-8,31.01.2026 23:15,5.00,1,1.00\n"
        "B-3,K-8,gestern,5.00,1,0\n"
    )
    run_pipeline(create_pipeline(), env="byo", conf_source=conf, runtime_params=GATE)
    silver = read("silver/orders").set_index("event_id").sort_index()
    assert silver.index.tolist() == ["B-1", "B-2"]
    assert silver.loc["B-1", "event_ts"] == pd.Timestamp("2026-01-31 12:30", tz="UTC")
    assert silver.loc["B-2", "event_ts"] == pd.Timestamp("2026-01-31 22:15", tz="UTC")
    assert silver["currency"].tolist() == ["EUR", "EUR"] and silver.loc["B-1", "amount"] == 19.9
    quarantine = read("quarantine/orders")
    assert quarantine["_failed_checks"].map(list).tolist() == [["event_ts: expected timestamp, got gestern"]]
    assert quarantine["_raw"].tolist() == ["B-3,K-8,gestern,5.00,1,0"]


def test_full_rebuild_without_landing_files_refuses_to_wipe_the_lakehouse(project_dir):
    write_landing(project_dir, "orders", "2026-01-02", "orders.jsonl", [order("e1")])
    run_pipeline(create_pipeline(), runtime_params=GATE)
    shutil.rmtree(project_dir / "data" / "01_raw")
    with pytest.raises(Exception, match="orders: full rebuild found no landing files, but 1 deliveries"):
        run_pipeline(create_pipeline(), runtime_params={**GATE, "ingest": {**GATE["ingest"], "full_rebuild": True}})
    assert len(read("silver/orders")) == 1


def test_undecodable_lines_are_quarantined_with_escaped_bytes_and_the_rest_is_ingested(project_dir):
    path = write_landing(project_dir, "orders", "2026-01-02", "orders.jsonl", [order("e1"), order("e2", "c2")])
    path.write_bytes(path.read_bytes() + b'{"event_id": "e3", "customer_id": "c\xff\xfe"}\n' + b"\xc3\x28 broken\n")
    write_landing(
        project_dir,
        "sessions",
        "2026-01-02",
        "sessions.jsonl",
        [
            {
                "event_id": "s1",
                "customer_id": "c1",
                "event_ts": "2026-01-01T09:00:00Z",
                "duration_s": 60,
                "pages": 2,
                "device": "web",
                "delivered_at": "2026-01-02T02:00:00Z",
            }
        ],
    )
    run_pipeline(create_pipeline(), runtime_params=GATE)
    assert sorted(read("silver/orders")["event_id"]) == ["e1", "e2"]  # the file's valid lines
    assert read("silver/sessions")["event_id"].tolist() == ["s1"]  # the other source's delivery
    quarantine = read("quarantine/orders").sort_values("_raw").reset_index(drop=True)
    assert quarantine["_raw"].tolist() == ["\\xc3( broken", '{"event_id": "e3", "customer_id": "c\\xff\\xfe"}']
    assert [list(c) for c in quarantine["_failed_checks"]] == [
        ["_raw: expected text, got line 4: byte 0xc3 at offset 0 is not valid utf-8" + HINT],
        ["_raw: expected text, got line 3: byte 0xff at offset 36 is not valid utf-8" + HINT],
    ]
    audit = read("monitoring/ingest_audit").set_index("batch_id").loc["orders/2026-01-02/orders"]
    assert (audit.bronze_rows, audit.inserted, audit.quarantined, bool(audit.balanced)) == (4, 2, 2, True)


def test_a_binary_file_is_one_quarantined_record_naming_it_and_an_empty_file_is_audited_once(project_dir):
    write_landing(project_dir, "orders", "2026-01-02", "orders.jsonl", [order("e1")])
    binary = project_dir / "data" / "01_raw" / "landing" / "dev" / "orders" / "2026-01-03" / "orders.jsonl"
    binary.parent.mkdir(parents=True)
    binary.write_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\xff\n\xfe\xfa\x00\x01")
    empty = write_landing(project_dir, "orders", "2026-01-04", "orders.jsonl", [])
    assert empty.read_bytes() == b""
    # One record is below any sensible min_rows: the gate does not stop the other deliveries for it.
    gate = {"ingest": {"quarantine_gate": {"max_rate": 0.5, "min_rows": 2}}}
    run_pipeline(create_pipeline(), runtime_params=gate)
    quarantine = read("quarantine/orders")
    assert len(quarantine) == 1 and quarantine["_source_file"][0].endswith("2026-01-03/orders.jsonl")
    assert list(quarantine["_failed_checks"][0]) == [
        "_raw: expected text, got the file is not utf-8 text (14 bytes with NUL bytes, 2 of 2 lines undecodable)"
    ]
    audit = read("monitoring/ingest_audit").set_index("batch_id")
    assert audit.loc["orders/2026-01-03/orders", ["bronze_rows", "quarantined"]].tolist() == [1, 1]
    assert audit.loc[
        "orders/2026-01-04/orders", ["bronze_rows", "inserted", "quarantined", "quarantine_rate"]
    ].tolist() == [0, 0, 0, 0.0]
    assert bool(audit["balanced"].all())
    first = versions()
    run_pipeline(create_pipeline(), runtime_params=gate)
    assert versions() == first  # neither file is read again


def test_a_latin1_csv_is_quarantined_line_by_line_with_its_bytes_and_judged_by_the_gate(project_dir):
    """Mostly undecodable is not binary: every line keeps its bytes and reason, and the gate sees them."""
    conf = project_dir / "conf"
    shutil.copytree(PROJECT_ROOT / "conf" / "base", conf / "base")
    (conf / "local").mkdir()
    (conf / "csv").mkdir()
    (conf / "csv" / "catalog.yml").write_text(
        yaml.safe_dump(
            {
                "orders_landing@spark": {
                    "type": "lakehouse_ml.datasets.LandingDataset",
                    "path": "exports/orders",
                    "filename_suffix": ".csv",
                    "dataset": {"type": "lakehouse_ml.datasets.LandingFileDataset", "file_format": "csv"},
                }
            }
        )
    )
    folder = project_dir / "exports" / "orders" / "2026-02-01"
    folder.mkdir(parents=True)
    (folder / "export.csv").write_bytes(
        "event_id,customer_id,event_ts,amount,currency,items,discount,Straße\n"
        "B-1,K-7,2026-01-31T13:30:00Z,19.90,EUR,2,0,Münster\n"
        "B-2,K-8,2026-01-31T14:30:00Z,5.00,EUR,1,0,Köln\n".encode("latin-1")
    )
    with pytest.raises(Exception, match=r"orders/2026-02-01/export: 2/2 quarantined"):
        run_pipeline(create_pipeline(), env="csv", conf_source=conf, runtime_params=GATE)
    quarantine = read("quarantine/orders").sort_values("_raw").reset_index(drop=True)
    assert quarantine["_raw"].tolist() == [
        "B-1,K-7,2026-01-31T13:30:00Z,19.90,EUR,2,0,M\\xfcnster",
        "B-2,K-8,2026-01-31T14:30:00Z,5.00,EUR,1,0,K\\xf6ln",
    ]
    assert list(quarantine["_failed_checks"][0]) == [
        "_raw: expected text, got line 2: byte 0xfc at offset 44 is not valid utf-8" + HINT
    ]
    assert table_version(str(LAKE / "silver/orders")) is None  # the gate kept the file out; nothing was lost
