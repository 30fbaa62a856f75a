"""Landing datasets: many delivered files read in one engine scan, each exactly once, split into
lines exactly as Spark's text source splits them, each line tagged with its file."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from kedro.io.core import DatasetError

from lakehouse_ml.datasets import LandingDataset, LandingFileDataset
from lakehouse_ml.datasets.landing import READ_PARTITIONS, decode_landing_file

HINT = " (a source in another encoding sets the landing dataset's `encoding`)"


def lines_of(content: bytes, file_format: str = "json", encoding: str = "utf-8"):
    lines, header, errors = decode_landing_file(content, file_format, encoding, "landing/x")
    return lines.to_pylist(), header, errors.to_pylist()


def test_text_is_split_on_crlf_cr_and_lf_and_csv_header_lines_are_dropped():
    assert lines_of(b"a\r\nb\rc\n\n  \nd") == (["a", "b", "c", "", "  ", "d"], None, [None] * 6)
    content = b"id,x\r\n1,2\nid,x\n3,4\n"  # a header repeated mid-file is dropped too
    assert lines_of(content, "csv") == (["1,2", "3,4", ""], "id,x", [None] * 3)


def test_undecodable_lines_keep_their_escaped_bytes_and_the_reason():
    lines, header, errors = lines_of(b'{"a": 1}\r\n{"b": "\xff"}\n')
    assert lines == ['{"a": 1}', '{"b": "\\xff"}', ""] and header is None
    assert errors == [None, "line 2: byte 0xff at offset 7 is not valid utf-8" + HINT, None]
    binary = lines_of(b"\x1f\x8b\x00\xff")
    assert binary[0] == ["<4 bytes with NUL bytes, 1 of 1 lines undecodable>"]
    assert binary[2] == ["the file is not utf-8 text (4 bytes with NUL bytes, 1 of 1 lines undecodable)"]
    assert lines_of("a;b\nM\xfcnster;1\n".encode("latin-1"), "csv", "latin-1") == (
        ["Münster;1", ""],
        "a;b",
        [None, None],
    )


@pytest.mark.parametrize("file_format", ["csv", "json"])
def test_an_empty_file_holds_no_line_and_no_header(file_format):
    assert lines_of(b"", file_format) == ([], None, [])
    assert lines_of(b"\n \r\n", file_format) == ([], None, [])


def test_a_csv_file_without_header_line_is_refused_naming_it():
    with pytest.raises(DatasetError, match="Landing file 'landing/x': CSV file has no header line"):
        decode_landing_file(b"\n1,2\n", "csv", "utf-8", "landing/x")


def test_lines_are_those_of_sparks_text_source(tmp_path, spark):
    path = tmp_path / "2026-01-01" / "orders.jsonl"
    path.parent.mkdir()
    path.write_bytes(b'{"a": 1}\r\n\r\n  {"b": 2}  \r{"c": 3}\n \n{"d": 4}')
    ours = [r["_raw"] for r in LandingFileDataset(filepath=str(path)).load().collect()]
    text = [r["value"] for r in spark.read.text(str(path)).collect() if r["value"].strip(" ")]
    assert ours == text == ['{"a": 1}', '  {"b": 2}  ', '{"c": 3}', '{"d": 4}']


def test_many_deliveries_are_read_in_one_scan_each_line_tagged_with_its_file(tmp_path, spark):
    root = tmp_path / "landing folder" / "tickets"
    assert 2 * READ_PARTITIONS < 40  # several files per read partition
    for day in range(1, 41):
        folder = root / (date(2025, 12, 31) + timedelta(days=day)).isoformat()
        folder.mkdir(parents=True)
        (folder / "tickets.csv").write_text(f"event_id,n\nt{day},{day}\nt{day}b,{day}\n")
    (root / "2026-01-02" / "tickets.csv").write_text("event_id,n,extra\nx,1,2\n")  # its own header
    dataset = LandingDataset(
        path=str(root),
        filename_suffix=".csv",
        dataset={"type": "lakehouse_ml.datasets.LandingFileDataset", "file_format": "csv"},
    )
    deliveries = dataset.load()
    assert len(deliveries) == 40 and "2026-02-09/tickets" in deliveries
    rows = deliveries.read(["2026-01-02/tickets", "2026-01-30/tickets"]).collect()
    assert sorted((r["_partition_id"], r["_raw"], r["_header"], r["_format"]) for r in rows) == [
        ("2026-01-02/tickets", "x,1,2", "event_id,n,extra", "csv"),
        ("2026-01-30/tickets", "t30,30", "event_id,n", "csv"),
        ("2026-01-30/tickets", "t30b,30", "event_id,n", "csv"),
    ]
    assert {r["_source_file"] for r in rows} == {
        str(root / "2026-01-02" / "tickets.csv"),
        str(root / "2026-01-30" / "tickets.csv"),
    }
    assert deliveries.read(list(deliveries)).count() == 2 * 39 + 1
    one = deliveries["2026-01-30/tickets"]()  # a single file still loads on its own
    assert sorted(r["_raw"] for r in one.collect()) == ["t30,30", "t30b,30"] and "_partition_id" not in one.columns
    assert deliveries.read([]).count() == 0
    with pytest.raises(KeyError, match="no delivered file for partition ids \\['2026-03-01/tickets'\\]"):
        deliveries.read(["2026-03-01/tickets"])


def test_a_landing_dataset_must_read_landing_files():
    with pytest.raises(
        DatasetError, match="dataset.type must be lakehouse_ml.datasets.LandingFileDataset, got TextDataset"
    ):
        LandingDataset(path="landing/orders", dataset="text.TextDataset")
    with pytest.raises(DatasetError, match="file_format must be one of \\('json', 'csv'\\), got 'xml'"):
        LandingDataset(
            path="landing/orders", dataset={"type": "lakehouse_ml.datasets.LandingFileDataset", "file_format": "xml"}
        )


def test_files_larger_than_a_scan_split_are_read_exactly_once(tmp_path, spark):
    """Sail 0.7.2's binaryFile source returned such a file twice (once per split)."""
    folder = tmp_path / "2026-01-01"
    folder.mkdir()
    (folder / "big.jsonl").write_bytes(b'{"n": 1}' + b" " * 300 + b"\n" * 1 + (b"x" * 300 + b"\n") * 60_000)
    deliveries = LandingDataset(
        path=str(tmp_path), filename_suffix=".jsonl", dataset="lakehouse_ml.datasets.LandingFileDataset"
    ).load()
    assert deliveries.read(["2026-01-01/big"]).count() == 60_001
