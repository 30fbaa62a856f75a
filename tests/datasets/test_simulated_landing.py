"""The simulator replaces its own feed, writes nothing when disabled, and never replaces deliveries of yours."""

from __future__ import annotations

import pytest
from kedro.io.core import DatasetError

from lakehouse_ml.datasets import SimulatedLandingDataset


def dataset(root):
    return SimulatedLandingDataset(path=str(root / "orders"), dataset="text.TextDataset", filename_suffix=".jsonl")


def test_the_simulator_replaces_its_own_feed(tmp_path):
    dataset(tmp_path).save({"2026-01-01/orders": "a\n", "2026-01-02/orders": "b\n"})
    dataset(tmp_path).save({"2026-01-03/orders": "c\n"})  # new settings: no stale day left behind
    assert sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "orders").rglob("*.jsonl")) == [
        "orders/2026-01-03/orders.jsonl"
    ]


def test_no_partitions_write_nothing_and_keep_the_delivered_files(tmp_path):
    delivered = tmp_path / "orders" / "1998-07-01" / "CDNOW_master.txt"
    delivered.parent.mkdir(parents=True)
    delivered.write_text("customer_id date\n")
    dataset(tmp_path).save({})
    assert delivered.read_text() == "customer_id date\n"


def test_a_relative_path_is_judged_by_the_files_under_it(tmp_path, monkeypatch):
    relative = SimulatedLandingDataset(path="landing/orders", dataset="text.TextDataset", filename_suffix=".jsonl")
    monkeypatch.chdir(tmp_path)  # after the dataset is built: the folder is the one saved into
    relative.save({"2026-01-01/orders": "a\n"})
    relative.save({"2026-01-02/orders": "b\n"})  # its own files: replaced, not refused
    assert (tmp_path / "landing/orders/2026-01-02/orders.jsonl").read_text() == "b\n"


def test_a_relative_path_is_judged_where_it_is_saved_even_after_a_change_of_directory(tmp_path, monkeypatch):
    relative = SimulatedLandingDataset(path="landing/orders", dataset="text.TextDataset", filename_suffix=".jsonl")
    monkeypatch.chdir(tmp_path)
    delivered = tmp_path / "landing" / "orders" / "1998-07-01" / "CDNOW_master.txt"
    delivered.parent.mkdir(parents=True)
    delivered.write_text("customer_id date\n")
    with pytest.raises(DatasetError, match="holds files the simulator did not write"):
        relative.save({"2026-01-01/orders": "a\n"})
    assert delivered.exists()


def test_a_folder_with_files_the_simulator_did_not_write_is_refused_naming_them(tmp_path):
    delivered = tmp_path / "orders" / "1998-07-01" / "CDNOW_master.txt"
    delivered.parent.mkdir(parents=True)
    delivered.write_text("customer_id date\n")
    with pytest.raises(
        DatasetError,
        match=r"holds files the simulator did not write \(e.g. \['1998-07-01/CDNOW_master.txt'\]\).*simulate.enabled: false",
    ):
        dataset(tmp_path).save({"2026-01-01/orders": "a\n"})
    assert delivered.exists()
