"""The inference log: rows of the live service in Delta, re-flushes that add nothing, size-triggered flushes."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from lakehouse_ml.datasets import PandasDeltaDataset
from lakehouse_ml.serving.config import InferenceLogSettings
from lakehouse_ml.serving.inference_log import InferenceLog, LogBatch, to_arrow, write_rows
from tests.serving.conftest import feature_rows
from tests.serving.test_scoring import json_rows


def _read(path: str) -> pd.DataFrame:
    return PandasDeltaDataset(filepath=path).load()


def test_every_scored_row_is_logged_with_its_request_version_features_and_score(live, registry, online_store):
    rows = json_rows(feature_rows(3, seed=5), registry["inputs"])
    rows = [dict(row, customer_id=f"log-{i}") for i, row in enumerate(rows)]
    ids = online_store["good"][:2]
    with live.client() as client:
        payload = client.post("/v1/score", json={"rows": rows}, headers={"X-Request-ID": "log-rows"}).json()
        customers = client.post(
            "/v1/score/customers", json={"customer_ids": ids}, headers={"X-Request-ID": "log-customers"}
        ).json()
    live.service.log.flush()
    logged = _read(live.service.settings.inference_log.path)
    mine = logged[logged["request_id"].isin(["log-rows", "log-customers"])].sort_values(["request_id", "row_index"])
    assert len(mine) == 5
    by_rows = mine[mine["request_id"] == "log-rows"]
    assert list(by_rows["row_index"]) == [0, 1, 2] and list(by_rows["customer_id"]) == ["log-0", "log-1", "log-2"]
    assert set(mine["model_version"]) == {"1"} and set(mine["role"]) == {"champion"} and mine["served"].all()
    assert list(by_rows["endpoint"]) == ["score"] * 3
    np.testing.assert_allclose(by_rows["probability"], [p["probability"] for p in payload["predictions"]], atol=0)
    assert list(by_rows["decision"]) == [p["decision"] for p in payload["predictions"]]
    assert [json.loads(f) for f in by_rows["features"]] == [
        {k: v for k, v in r.items() if k != "customer_id"} for r in rows
    ]
    assert (mine["latency_ms"] > 0).all() and (
        mine["logged_at"] > pd.Timestamp(datetime.now(timezone.utc)) - pd.Timedelta(minutes=5)
    ).all()
    by_customers = mine[mine["request_id"] == "log-customers"]
    assert list(by_customers["customer_id"]) == ids and list(by_customers["endpoint"]) == ["score_customers"] * 2
    np.testing.assert_allclose(
        by_customers["probability"], [p["probability"] for p in customers["predictions"]], atol=0
    )


def _batch(request_id: str, n: int, role: str = "champion") -> LogBatch:
    features = pd.DataFrame({"x": np.arange(n, dtype=float), "tier": ["basic"] * n})
    features.loc[0, "x"] = np.nan
    return LogBatch(
        request_id=request_id,
        logged_at=datetime(2026, 6, 1, 12, tzinfo=timezone.utc),
        endpoint="score",
        role=role,
        served=role == "champion",
        model_name="m",
        model_version="1",
        threshold=0.5,
        row_indices=list(range(n)),
        customer_ids=[f"c{i}" for i in range(n)],
        features=features,
        probabilities=np.linspace(0.2, 0.8, n),
        latency_ms=1.5,
    )


def test_a_write_retried_as_the_version_that_landed_adds_nothing(tmp_path):
    path = str(tmp_path / "inference_log")
    batches = [_batch("r1", 3), _batch("r1", 3, role="challenger"), _batch("r2", 2)]
    table = write_rows(path, to_arrow(batches), "writer-a", 1)
    write_rows(path, to_arrow(batches), "writer-a", 1)  # a retry after a commit whose acknowledgement was lost
    write_rows(table, to_arrow(batches), "writer-a", 1)  # the same through the open table
    write_rows(table, to_arrow([_batch("r3", 1)]), "writer-a", 2)
    write_rows(path, to_arrow([_batch("r4", 1)]), "writer-b", 1)  # another process: its own versions
    logged = _read(path).sort_values(["request_id", "role", "row_index"])
    assert len(logged) == 10 and not logged.duplicated(["request_id", "row_index", "role"]).any()
    first = logged.iloc[0]
    assert (
        json.loads(first["features"]) == {"x": None, "tier": "basic"}
        and first["decision"] == 0
        and first["log_date"] == "2026-06-01"
    )
    assert list(logged[logged["request_id"] == "r2"]["decision"]) == [0, 1]


def test_a_flush_whose_commit_landed_but_failed_is_not_written_twice(tmp_path, monkeypatch):
    """The write commits, then fails (an acknowledgement lost on the way back): the rows stay
    pending, and the next flush finds their version in the table instead of appending them again."""
    import deltalake

    path = str(tmp_path / "inference_log")
    log = InferenceLog(InferenceLogSettings(path=path, flush_rows=100, flush_interval_s=3600))
    log.append(_batch("a", 2))
    assert log.flush() == 2
    real, lost = deltalake.write_deltalake, []

    def commit_then_fail(*args, **kwargs):
        real(*args, **kwargs)
        if not lost:
            lost.append(True)
            raise OSError("connection reset before the commit was acknowledged")

    monkeypatch.setattr(deltalake, "write_deltalake", commit_then_fail)
    log.append(_batch("b", 3))
    assert log.flush() == 0 and log.pending_rows == 3
    log.append(_batch("c", 1))
    assert log.flush() == 4 and log.pending_rows == 0  # b found in the table, c appended
    logged = _read(path)
    assert sorted(logged["request_id"]) == ["a", "a", "b", "b", "b", "c"]


def test_a_flush_runs_when_enough_rows_wait_and_close_flushes_the_rest(tmp_path):
    path = str(tmp_path / "inference_log")
    log = InferenceLog(InferenceLogSettings(path=path, flush_rows=4, flush_interval_s=3600))
    log.start()
    try:
        log.append(_batch("a", 2))
        log.append(_batch("b", 2))  # 4 rows: due
        deadline = time.monotonic() + 15
        while log.pending_rows and time.monotonic() < deadline:
            time.sleep(0.02)
        while not PandasDeltaDataset(filepath=path).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(_read(path)) == 4
        log.append(_batch("c", 1))
    finally:
        assert log.close() == 1
    assert sorted(_read(path)["request_id"].unique()) == ["a", "b", "c"]


def test_a_failed_flush_keeps_the_rows_for_the_next_one(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the table should be")
    log = InferenceLog(InferenceLogSettings(path=str(blocker / "inference_log"), flush_rows=100, flush_interval_s=3600))
    log.append(_batch("a", 3))
    assert log.flush() == 0 and log.pending_rows == 3
    log.settings = InferenceLogSettings(path=str(tmp_path / "inference_log"))
    assert log.flush() == 3 and log.pending_rows == 0


def test_while_flushes_fail_the_oldest_rows_beyond_the_buffer_are_dropped(tmp_path):
    """The failed flush's rows go first: a batch that always fails cannot hold the log up."""
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    log = InferenceLog(
        InferenceLogSettings(path=str(blocker / "t"), flush_rows=100, flush_interval_s=3600, max_buffer_rows=4)
    )
    for name in "abc":
        log.append(_batch(name, 2))
        log.flush()
    assert log.pending_rows == 4
    log.settings = InferenceLogSettings(path=str(tmp_path / "inference_log"))
    assert log.flush() == 4 and log.pending_rows == 0
    assert sorted(set(_read(str(tmp_path / "inference_log"))["request_id"])) == ["b", "c"]  # a, the oldest, dropped


def test_rows_arriving_during_a_flush_do_not_wake_a_second_small_one(tmp_path, monkeypatch):
    """Rows being written are not counted toward the next flush: a flush is due at flush_rows new rows."""
    import deltalake

    path = str(tmp_path / "inference_log")
    log = InferenceLog(InferenceLogSettings(path=path, flush_rows=4, flush_interval_s=3600))
    real = deltalake.write_deltalake

    def slow_write(*args, **kwargs):
        log.append(_batch("during", 1))  # a request answered while the flush writes
        real(*args, **kwargs)

    monkeypatch.setattr(deltalake, "write_deltalake", slow_write)
    log.append(_batch("a", 4))
    log._wake.clear()
    assert log.flush() == 4
    assert log.pending_rows == 1 and not log._wake.is_set()


def test_feature_json_boxes_numpy_values_as_pandas_did():
    """Values of an object column may be NumPy scalars: written as numbers, as to_dict gave them."""
    features = pd.DataFrame({"n": pd.Series([np.int64(3), np.float64(2.5), np.bool_(True), None], dtype=object)})
    batch = LogBatch(
        request_id="r",
        logged_at=datetime(2026, 6, 1, tzinfo=timezone.utc),
        endpoint="score",
        role="champion",
        served=True,
        model_name="m",
        model_version="1",
        threshold=None,
        row_indices=list(range(4)),
        customer_ids=[None] * 4,
        features=features,
        probabilities=np.full(4, 0.5),
        latency_ms=1.0,
    )
    expected = [
        json.dumps({k: (None if pd.isna(v) else v) for k, v in row.items()}, default=str)
        for row in features.to_dict("records")
    ]
    assert (
        to_arrow([batch]).column("features").to_pylist()
        == expected
        == ['{"n": 3}', '{"n": 2.5}', '{"n": true}', '{"n": null}']
    )


def test_feature_json_of_many_batches_keeps_each_batch_its_own_columns_and_order():
    """Over many batches of two column sets and two dtypes of a column, each row keeps its batch's
    columns, values (3 from an int column, 3.0 from a float one) and place."""
    now = datetime.now(timezone.utc)
    champion, challenger = feature_rows(700, seed=3), feature_rows(5, seed=4).drop(columns=["tenure_days"])
    champion.iloc[3, 0] = np.nan  # a missing value is null, not NaN
    # The same columns, one as float (a payload's numbers): its batches must keep their own text.
    as_float = champion.astype({"tenure_days": "float64"})
    assert champion["tenure_days"].dtype.kind == "i"
    batches = []
    for k in range(300):  # the two column sets interleaved
        source = as_float if k % 3 == 0 else champion
        features = challenger.iloc[[k % 5]] if k % 7 == 0 else source.iloc[2 * k : 2 * k + 2]
        batches.append(
            LogBatch(
                request_id=f"r{k}",
                logged_at=now,
                endpoint="score",
                role="champion",
                served=True,
                model_name="m",
                model_version="1",
                threshold=0.5,
                row_indices=list(range(len(features))),
                customer_ids=[None] * len(features),
                features=features,
                probabilities=np.full(len(features), 0.25),
                latency_ms=1.0,
            )
        )
    logged = to_arrow(batches).column("features").to_pylist()
    expected = [
        json.dumps({k: (None if pd.isna(v) else v) for k, v in row.items()}, default=str)
        for batch in batches
        for row in batch.features.astype(object).to_dict("records")
    ]
    assert logged == expected
    assert json.loads(logged[2])[champion.columns[0]] is None  # batch 1 holds rows 2 and 3
    assert "tenure_days" not in json.loads(logged[0]) and "tenure_days" in json.loads(logged[1])
    assert isinstance(json.loads(logged[1])["tenure_days"], int)  # batch 1: the int frame
    assert isinstance(json.loads(logged[5])["tenure_days"], float)  # batch 3: the float one
