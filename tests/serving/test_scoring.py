"""The scoring endpoints of the live service: happy paths, online/offline parity, contract policy."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from lakehouse_ml.online import SQLiteOnlineStore
from tests.helpers import PROJECT_ROOT
from tests.serving.conftest import (
    MODEL_NAME,
    NOW,
    THRESHOLDS,
    TOKEN,
    feature_rows,
    live_service,
    serving_settings,
    store_rows,
)


def json_rows(frame: pd.DataFrame, inputs: list[str]) -> list[dict]:
    """Rows as a client sends them (plain JSON types)."""
    return [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in frame[inputs].to_dict("records")
    ]


def test_rows_are_scored_by_the_champion_as_the_model_itself_scores_them(live, registry):
    rows = feature_rows(5, seed=3)
    with live.client() as client:
        response = client.post("/v1/score", json={"rows": json_rows(rows, registry["inputs"])})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = registry["models"]["1"].predict_proba(rows[registry["inputs"]])[:, 1]
    assert [p["row"] for p in body["predictions"]] == [0, 1, 2, 3, 4]
    np.testing.assert_allclose([p["probability"] for p in body["predictions"]], expected, rtol=0, atol=1e-12)
    assert {(p["model_version"], p["role"], p["threshold"]) for p in body["predictions"]} == {
        ("1", "champion", THRESHOLDS["1"])
    }
    assert [p["decision"] for p in body["predictions"]] == [int(p >= THRESHOLDS["1"]) for p in expected]
    assert body["model_name"] == MODEL_NAME and len(body["request_id"]) == 32
    assert response.headers["x-model-version"] == "1" and response.headers["x-request-id"] == body["request_id"]


def test_a_caller_request_id_is_kept(live, registry):
    rows = json_rows(feature_rows(1), registry["inputs"])
    with live.client() as client:
        response = client.post("/v1/score", json={"rows": rows}, headers={"X-Request-ID": "order-42"})
    assert response.json()["request_id"] == "order-42" and response.headers["x-request-id"] == "order-42"


def test_nullable_inputs_may_be_null_and_are_imputed_by_the_model(live, registry):
    rows = feature_rows(1, seed=4)
    row = json_rows(rows, registry["inputs"])[0]
    row["customer_activity__orders_30d"] = None  # contract: impute 0
    row["customer_profile__plan_tier"] = None  # contract: impute 'unknown'
    with live.client() as client:
        response = client.post("/v1/score", json={"rows": [row]})
    assert response.status_code == 200, response.text
    frame = pd.DataFrame([row])[registry["inputs"]]
    assert response.json()["predictions"][0]["probability"] == pytest.approx(
        registry["models"]["1"].predict_proba(frame)[0, 1], abs=1e-12
    )


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.services)])
def live_on_each_store(request, registry, online_store, tmp_path):
    """The service reading the same publish from SQLite (the package's service) or from Redis."""
    if request.param == "sqlite":
        yield request.getfixturevalue("live")
        return
    settings = serving_settings(tmp_path, None, online_store=request.getfixturevalue("redis_online_store"))
    with live_service(settings) as running:
        yield running


def test_customers_are_scored_with_their_online_features_as_offline_rows_are(
    live_on_each_store, registry, online_store
):
    """Online/offline parity: the same customers' training-shaped rows, scored in process and sent as
    payload, give exactly the probabilities the service computes from the online store (SQLite and Redis)."""
    live = live_on_each_store
    ids = online_store["good"][:20]
    offline = online_store["customers"].loc[ids]
    with live.client() as client:
        online = client.post("/v1/score/customers", json={"customer_ids": ids})
        payload = client.post("/v1/score", json={"rows": json_rows(offline.astype(object), registry["inputs"])})
    assert online.status_code == 200, online.text
    predictions = online.json()["predictions"]
    assert [p["customer_id"] for p in predictions] == ids and [p["row"] for p in predictions] == list(range(20))
    expected = registry["models"]["1"].predict_proba(offline[registry["inputs"]].infer_objects())[:, 1]
    np.testing.assert_allclose([p["probability"] for p in predictions], expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose([p["probability"] for p in payload.json()["predictions"]], expected, rtol=0, atol=1e-12)
    assert "errors" not in online.json()


@pytest.mark.parametrize(
    ("customer", "reason"),
    [
        ("c-stale", "customer_activity.feature_ts: freshness expected a feature row at most 2d old"),
        ("c-bad", "customer_activity.orders_30d: range expected values >= 0, got -3.0"),
        ("c-noprofile", "customer_profile.feature_ts: freshness expected a feature row"),
        ("c-unknown", "customer_id: not in the online store"),
        # tenure_days is computed at lookup time (no contract): judged by the rule of its declaration in on_demand_features.
        ("c-future", "tenure_days: range expected values in [0, 36500], got -"),
    ],
)
def test_a_customer_breaking_a_contract_is_refused_with_the_reason(live, customer, reason):
    with live.client() as client:
        response = client.post("/v1/score/customers", json={"customer_ids": [customer]})
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["field"] == "customer_ids[0]" and error["problem"] == "contract" and error["customer_id"] == customer
    assert reason in error["got"]


def test_in_a_batch_refused_customers_are_error_entries_beside_the_scores(live, online_store):
    ids = [online_store["good"][0], "c-bad", online_store["good"][1]]
    with live.client() as client:
        response = client.post("/v1/score/customers", json={"customer_ids": ids})
    assert response.status_code == 200
    body = response.json()
    assert [(p["row"], p["customer_id"]) for p in body["predictions"]] == [(0, ids[0]), (2, ids[2])]
    assert [(e["field"], e["customer_id"]) for e in body["errors"]] == [("customer_ids[1]", "c-bad")]


def test_with_the_flag_policy_customers_are_scored_and_flagged(registry, online_store, tmp_path):
    settings = serving_settings(tmp_path, online_store["path"], on_contract_violation="flag")
    with live_service(settings) as running, running.client() as client:
        response = client.post("/v1/score/customers", json={"customer_ids": [online_store["good"][0], "c-bad"]})
    assert response.status_code == 200
    good, bad = response.json()["predictions"]
    assert good["flags"] == [] and 0 <= bad["probability"] <= 1
    assert bad["flags"] == ["customer_activity.orders_30d: range expected values >= 0, got -3.0"]


def test_without_a_champion_scoring_is_unavailable_and_not_ready(registry, tmp_path):
    settings = serving_settings(tmp_path, None, model_name="dev.ml.never_registered")
    with live_service(settings) as running, running.client() as client:
        score = client.post("/v1/score", json={"rows": [{}]})
        ready = client.get("/ready")
        health = client.get("/health")
    assert score.status_code == 503 and score.json()["errors"][0]["problem"] == "unavailable"
    assert (
        ready.status_code == 503
        and "no 'champion' release of dev.ml.never_registered loaded" in ready.json()["reasons"]
    )
    assert health.status_code == 200


@pytest.fixture
def held_load(monkeypatch) -> Iterator[threading.Event]:
    """Resolving an alias waits until the returned event is set (set on exit in any case): the first
    load of the releases is held in the middle, with the releases' lock taken."""
    release = threading.Event()
    resolve = MlflowClient.get_model_version_by_alias

    def held(client: MlflowClient, *args: Any, **kwargs: Any) -> Any:
        release.wait(60)
        return resolve(client, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "get_model_version_by_alias", held)
    try:
        yield release
    finally:
        release.set()


def test_the_service_listens_before_the_releases_load_and_a_scoring_call_waits_for_them(
    registry, online_store, tmp_path, held_load
):
    settings = serving_settings(tmp_path, online_store["path"])
    with live_service(settings, loaded=False) as running, running.client() as client:
        health, ready = client.get("/health"), client.get("/ready")
        assert health.status_code == 200
        assert ready.status_code == 503 and ready.json()["reasons"] == ["the releases are still loading"]
        version = client.get("/version").json()
        assert version["releases_loaded"] is False and version["champion"] is None
        # It waits for the releases' lock, which the load holds, in a worker thread: the event loop
        # goes on answering meanwhile.
        traffic_answers: list[Any] = []
        traffic = threading.Thread(
            target=lambda: traffic_answers.append(client.post("/admin/traffic", json={"mode": "off"}))
        )
        traffic.start()
        time.sleep(0.5)
        assert traffic.is_alive()  # in flight, waiting for the lock
        assert client.get("/health", timeout=2).status_code == 200
        answers: list[Any] = []
        caller = threading.Thread(
            target=lambda: answers.append(
                client.post("/v1/score/customers", json={"customer_ids": online_store["good"][:2]})
            )
        )
        caller.start()
        caller.join(timeout=0.5)
        assert caller.is_alive() and not answers  # waiting for the releases, not refused
        held_load.set()
        caller.join(timeout=30)
        [scored] = answers
        assert scored.status_code == 200, scored.text
        assert [p["model_version"] for p in scored.json()["predictions"]] == ["1", "1"]
        traffic.join(timeout=30)
        assert [answer.status_code for answer in traffic_answers] == [200]
        assert running.service.releases.state.traffic.mode == "off"
        assert client.get("/ready").json() == {"ready": True, "reasons": []}


def test_the_model_threads_are_capped_on_the_event_loop_once_the_model_has_loaded(registry, tmp_path):
    """threadpoolctl caps only the libraries loaded when it is called, and scikit-learn (its OpenMP,
    SciPy's BLAS) comes with the model, after the server listens. In a process of its own: this
    one has them all loaded already."""
    code = textwrap.dedent(f"""
        import json, socket, threading, time
        from dataclasses import replace

        import httpx, uvicorn

        from lakehouse_ml.serving import create_app, load_settings
        from lakehouse_ml.serving.config import InferenceLogSettings

        settings = replace(
            load_settings("local"),
            online_store=None,
            poll_interval_s=0,
            inference_log=InferenceLogSettings(path={str(tmp_path / "log")!r}, flush_rows=1000, flush_interval_s=3600),
        )
        app = create_app(settings)

        async def threads():  # on the event loop's thread, as the model calls are
            from threadpoolctl import threadpool_info

            return [(pool["user_api"], pool["num_threads"]) for pool in threadpool_info()]

        app.add_api_route("/test/threads", threads)
        from threadpoolctl import threadpool_info  # imports no native library itself
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        threading.Thread(target=server.run, kwargs={{"sockets": [sock]}}, daemon=True).start()
        url = f"http://127.0.0.1:{{sock.getsockname()[1]}}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/ready").status_code == 200:
                    break
            except httpx.TransportError:  # not listening yet
                pass
            time.sleep(0.05)
        else:
            raise SystemExit("the service was not ready within 120 s")
        uncapped = [(pool["user_api"], pool["num_threads"]) for pool in threadpool_info()]  # this thread's
        capped = httpx.get(url + "/test/threads").json()
        print(json.dumps({{"model_threads": settings.model_threads, "pools": capped, "uncapped": uncapped}}))
        server.should_exit = True
    """)
    # The libraries' own defaults (one thread per core), or the cap would have nothing to change.
    inherited = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    env = {
        **inherited,
        "LAKEHOUSE_ML_SERVING_TOKEN": TOKEN,
        "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(),
        "MLFLOW_REGISTRY_URI": mlflow.get_registry_uri(),
    }
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    apis = {api for api, _ in report["pools"]}
    assert {"openmp", "blas"} <= apis, report  # scikit-learn's OpenMP and a BLAS loaded with the model
    assert {n for _, n in report["pools"]} == {report["model_threads"]} == {1}, report
    if (os.cpu_count() or 1) > 1:  # uncapped, OpenMP uses every core: the cap changed something
        assert max(n for api, n in report["uncapped"] if api == "openmp") > 1, report


def test_a_scoring_call_waits_at_most_startup_wait_s_for_the_releases(registry, online_store, tmp_path, held_load):
    settings = serving_settings(tmp_path, online_store["path"], startup_wait_s=0.3)
    with live_service(settings, loaded=False) as running, running.client() as client:
        started = time.monotonic()
        response = client.post("/v1/score", json={"rows": [{}]})
        waited = time.monotonic() - started
        held_load.set()
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert 0.3 <= waited < 5
    assert response.json()["errors"] == [
        {
            "field": "model",
            "problem": "loading",
            "expected": "the releases loaded (the service is starting)",
            "got": "still loading after 0.3 s (serving.startup_wait_s)",
        }
    ]


def test_ready_and_version_report_the_releases_and_the_online_store(live, registry, online_store):
    with live.client(token=None) as anonymous, live.client() as client:
        ready, public, version = anonymous.get("/ready"), anonymous.get("/version"), client.get("/version")
    assert ready.status_code == 200 and ready.json() == {"ready": True, "reasons": []}
    assert public.status_code == 200 and public.json() == {
        "service": version.json()["service"]
    }  # nothing else without the token
    info = version.json()
    assert info["model_name"] == MODEL_NAME and info["env"] == "local" and info["releases_loaded"] is True
    assert info["champion"]["version"] == "1" and info["champion"]["model_uri"] == f"models:/{MODEL_NAME}/1"
    assert info["challenger"]["version"] == "2" and info["champion"]["operating_threshold"] == THRESHOLDS["1"]
    assert [i["name"] for i in info["inputs"]] == registry["inputs"]
    assert {i["name"]: i["expected"] for i in info["inputs"]}["tenure_days"] == "integer in [0, 36500] or null"
    assert (info["online_store"]["backend"], info["online_store"]["error"]) == ("sqlite", None)
    tables = info["online_store"]["tables"]
    assert tables["customer_activity"]["source_version"] == 4 and tables["customer_profile"]["source_version"] == 2
    assert str(Path(online_store["path"]).parent) not in version.text  # the store's backend and tables, never its path


def test_no_response_names_a_local_path(registry, tmp_path, caplog):
    """A store that cannot be opened (its directory is a file) is reported by its error's type; the
    message, which names the path, goes to the service log only."""
    blocker = tmp_path / "not_a_directory"
    blocker.write_text("")
    settings = serving_settings(tmp_path / "service", str(blocker / "online_store.db"))
    with caplog.at_level(logging.ERROR), live_service(settings) as running, running.client() as client:
        responses = [
            client.get("/ready"),
            client.get("/version"),
            client.post("/v1/score/customers", json={"customer_ids": ["c-0001"]}),
            client.post("/admin/reload"),
            client.get("/health"),
            client.get("/metrics"),
            client.get("/openapi.json"),
        ]
    assert [r.status_code for r in responses] == [503, 200, 503, 200, 200, 200, 200]
    assert "online store: FileExistsError (details in the service log)" in responses[0].json()["reasons"]
    assert responses[1].json()["online_store"] == {
        "backend": "sqlite",
        "error": "FileExistsError (details in the service log)",
        "tables": {},
    }
    assert all(str(tmp_path) not in r.text for r in responses)
    assert str(blocker) in caplog.text  # the operator still gets the whole message


def test_with_the_online_store_clock_a_store_published_in_the_past_is_fresh_at_its_own_time(registry, tmp_path):
    """A replayed or simulated lakehouse lives in the past: judged at the wall clock every customer is
    stale, judged at the store's publish time (`request_time: online_store`) they are scored."""
    past = datetime(2026, 6, 29, 2, 10, tzinfo=timezone.utc)
    shift = NOW - past
    tables = store_rows({"c-past": feature_rows(1, seed=3).iloc[0]})
    store = SQLiteOnlineStore(str(tmp_path / "past.db"))
    for table, rows in tables.items():
        rows = rows.assign(**{c: rows[c] - shift for c in ("feature_ts", "ingested_at", "signup_ts") if c in rows})
        store.upsert(table, rows, source_version=1, key_columns=["customer_id"], as_of=past)
    store.close()
    answers = {}
    for clock in ("now", "online_store"):
        settings = serving_settings(tmp_path / clock, str(tmp_path / "past.db"), request_time=clock)
        with live_service(settings) as running, running.client() as client:
            answers[clock] = client.post("/v1/score/customers", json={"customer_ids": ["c-past"]})
    assert answers["now"].status_code == 422
    assert "customer_activity.feature_ts: freshness expected" in answers["now"].json()["errors"][0]["got"]
    assert answers["online_store"].status_code == 200, answers["online_store"].text
    assert answers["online_store"].json()["predictions"][0]["customer_id"] == "c-past"


def test_with_the_online_store_clock_a_store_with_nothing_published_gives_503(registry, tmp_path):
    """The store's time comes with its rows: a store no table was published to has none, and a
    lookup is refused as the store being unavailable (not a 500, not a lookup at another time)."""
    SQLiteOnlineStore(str(tmp_path / "empty.db")).close()
    settings = serving_settings(tmp_path / "svc", str(tmp_path / "empty.db"), request_time="online_store")
    with live_service(settings) as running, running.client() as client:
        response = client.post("/v1/score/customers", json={"customer_ids": ["c-1"]})
    assert response.status_code == 503, response.text
    [error] = response.json()["errors"]
    assert error["field"] == "online_store" and error["got"] == "no table published"
    assert "publish_online" in error["expected"]


@pytest.mark.services
def test_a_redis_store_that_goes_down_gives_503_and_the_service_recovers_when_it_returns(
    registry, online_store, tmp_path
):
    """Lookups against a stopped Redis are refused as the online store being unavailable (never a
    500, never its address or password); once the server is back the same request is scored."""
    from lakehouse_ml.online import open_online_store
    from tests.services.servers import start_redis

    redis = start_redis(tmp_path / "redis")
    config = {
        "type": "redis",
        "url": redis.url,
        "password": redis.password,
        "namespace": "down-test",
        "socket_timeout": 2,
    }
    store = open_online_store(config)
    store.publish(online_store["publish"])
    store.close()
    ids = online_store["good"][:3]
    try:
        settings = serving_settings(tmp_path, None, online_store=config, online_store_retry_s=1.0)
        with live_service(settings) as running, running.client() as client:
            assert client.post("/v1/score/customers", json={"customer_ids": ids}).status_code == 200
            redis.stop()
            down = client.post("/v1/score/customers", json={"customer_ids": ids})
            assert down.status_code == 503, down.text
            [error] = down.json()["errors"]
            assert error["field"] == "online_store" and error["problem"] == "unavailable"
            assert str(redis.port) not in down.text and redis.password not in down.text
            # Within online_store_retry_s the store is not asked again: answered at once, not after its timeout.
            started = time.monotonic()
            assert client.post("/v1/score/customers", json={"customer_ids": ids}).status_code == 503
            assert time.monotonic() - started < 0.5
            assert client.get("/ready").status_code == 503
            redis = start_redis(tmp_path / "redis-again", port=redis.port)  # no persistence: publish again
            store = open_online_store(config)
            store.publish(online_store["publish"])
            store.close()
            time.sleep(1.1)  # the retry interval
            again = client.post("/v1/score/customers", json={"customer_ids": ids})
            assert again.status_code == 200, again.text
            assert client.get("/ready").status_code == 200
    finally:
        redis.stop()
