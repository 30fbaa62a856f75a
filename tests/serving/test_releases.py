"""Release control of the live service: canary split, shadow scoring, hot swaps with zero failed
requests, alias polling, a version that cannot serve is refused, and the Prometheus metrics."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import numpy as np
import pytest
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

from lakehouse_ml.datasets import PandasDeltaDataset
from lakehouse_ml.serving.config import Traffic
from lakehouse_ml.serving.releases import Releases
from tests.serving.conftest import MODEL_NAME, feature_rows, live_service, serving_settings
from tests.serving.test_scoring import json_rows


@pytest.fixture
def rows(registry) -> list[dict]:
    return json_rows(feature_rows(100, seed=21), registry["inputs"])


@pytest.fixture
def aliases(live):
    """Restores champion 1 / challenger 2, traffic canary 0 and the service's releases after a test."""
    yield MlflowClient()
    client = MlflowClient()
    client.set_registered_model_alias(MODEL_NAME, "champion", "1")
    client.set_registered_model_alias(MODEL_NAME, "challenger", "2")
    with live.client() as http:
        assert http.post("/admin/reload").status_code == 200
        assert http.post("/admin/traffic", json={"mode": "canary", "share": 0}).status_code == 200


def _roles(client, rows: list[dict], customers: list[str]) -> dict[str, tuple[str, str]]:
    """customer -> (role, version) over batches of 100 rows."""
    answered = {}
    for start in range(0, len(customers), 100):
        batch = [dict(rows[i % len(rows)], customer_id=c) for i, c in enumerate(customers[start : start + 100])]
        response = client.post("/v1/score", json={"rows": batch})
        assert response.status_code == 200, response.text
        answered.update({p["customer_id"]: (p["role"], p["model_version"]) for p in response.json()["predictions"]})
    return answered


def test_a_canary_share_of_customers_is_answered_by_the_challenger_stickily(live, rows, aliases):
    customers = [f"cust-{i:05d}" for i in range(2000)]
    with live.client() as client:
        assert client.post("/admin/traffic", json={"mode": "canary", "share": 0.3}).json()["share"] == 0.3
        first = _roles(client, rows, customers)
        again = _roles(client, rows, list(reversed(customers)))
        rolled_back = client.post("/admin/traffic", json={"mode": "canary", "share": 0}).status_code
        after = _roles(client, rows, customers[:300])
    share = sum(role == "challenger" for role, _ in first.values()) / len(customers)
    assert 0.25 <= share <= 0.35
    assert {answer for answer in first.values()} == {("champion", "1"), ("challenger", "2")}
    assert again == first  # sticky per customer, whatever the batch composition
    assert rolled_back == 200 and set(after.values()) == {("champion", "1")}


def test_challenger_rows_carry_the_challengers_scores(live, registry, rows, aliases):
    with live.client() as client:
        client.post("/admin/traffic", json={"mode": "canary", "share": 1.0})
        response = client.post(
            "/v1/score", json={"rows": [dict(r, customer_id=f"x{i}") for i, r in enumerate(rows[:10])]}
        )
    predictions = response.json()["predictions"]
    expected = registry["models"]["2"].predict_proba(feature_rows(100, seed=21)[registry["inputs"]].head(10))[:, 1]
    assert {(p["role"], p["model_version"]) for p in predictions} == {("challenger", "2")}
    np.testing.assert_allclose([p["probability"] for p in predictions], expected, atol=1e-12)
    assert response.headers["x-model-version"] == "2"


def test_rows_without_a_customer_id_stay_with_the_champion(live, rows, aliases):
    with live.client() as client:
        client.post("/admin/traffic", json={"mode": "canary", "share": 1.0})
        response = client.post("/v1/score", json={"rows": rows[:5]})
    assert {p["role"] for p in response.json()["predictions"]} == {"champion"}


def test_traffic_settings_are_validated(live, aliases):
    with live.client() as client:
        share = client.post("/admin/traffic", json={"mode": "canary", "share": 1.5})
        mode = client.post("/admin/traffic", json={"mode": "blue-green"})
    assert share.status_code == 422 and share.json()["errors"][0]["field"] == "share"
    assert mode.status_code == 422 and mode.json()["errors"][0]["field"] == "mode"


def _log(live):
    live.service.log.flush()
    return PandasDeltaDataset(filepath=live.service.settings.inference_log.path).load()


def test_in_shadow_mode_the_challenger_scores_a_copy_that_is_only_logged(live, registry, rows, aliases):
    with live.client() as client:
        client.post("/admin/traffic", json={"mode": "shadow", "share": 0})
        response = client.post(
            "/v1/score",
            json={"rows": [dict(r, customer_id=f"s{i}") for i, r in enumerate(rows[:8])]},
            headers={"X-Request-ID": "shadow-1"},
        )
    assert {(p["role"], p["model_version"]) for p in response.json()["predictions"]} == {("champion", "1")}
    deadline = time.monotonic() + 10
    while live.service._shadow_waiting and time.monotonic() < deadline:
        time.sleep(0.01)
    logged = _log(live)
    logged = logged[logged["request_id"] == "shadow-1"].sort_values(["role", "row_index"])
    served, shadow = logged[logged["served"]], logged[~logged["served"]]
    assert list(served["role"].unique()) == ["champion"] and list(shadow["role"].unique()) == ["challenger"]
    assert list(shadow["row_index"]) == list(range(8)) and list(shadow["customer_id"]) == [f"s{i}" for i in range(8)]
    assert set(shadow["model_version"]) == {"2"}
    expected = registry["models"]["2"].predict_proba(feature_rows(100, seed=21)[registry["inputs"]].head(8))[:, 1]
    np.testing.assert_allclose(shadow["probability"], expected, atol=1e-12)


def _stream(live, row: dict, stop: threading.Event, answers: list) -> None:
    with live.client() as client:
        while not stop.is_set():
            started = time.monotonic()
            try:
                response = client.post("/v1/score", json={"rows": [row]})
                version = response.json()["predictions"][0]["model_version"] if response.status_code == 200 else None
                answers.append((started, response.status_code, version))
            except Exception as error:  # noqa: BLE001 - a transport failure is a failed request too
                answers.append((started, repr(error), None))


def test_a_promotion_and_a_rollback_swap_releases_without_a_failed_request(live, rows, aliases):
    answers: list = []
    stop = threading.Event()
    streams = [threading.Thread(target=_stream, args=(live, rows[0], stop, answers)) for _ in range(2)]
    for stream in streams:
        stream.start()
    try:
        time.sleep(0.3)
        aliases.set_registered_model_alias(MODEL_NAME, "champion", "3")
        with live.client() as client:
            promoted = client.post("/admin/reload")
            swapped_at = time.monotonic()
            time.sleep(0.3)
            aliases.set_registered_model_alias(MODEL_NAME, "champion", "1")
            rolled_back = client.post("/admin/reload")
            rolled_back_at = time.monotonic()
            time.sleep(0.3)
    finally:
        stop.set()
        for stream in streams:
            stream.join()
    assert promoted.status_code == 200 and promoted.json()["champion"] == {"alias": "champion", "from": "1", "to": "3"}
    assert rolled_back.json()["champion"] == {"alias": "champion", "from": "3", "to": "1"}
    assert len(answers) > 30 and Counter(status for _, status, _ in answers) == {200: len(answers)}
    assert {version for started, _, version in answers if swapped_at < started < swapped_at + 0.25} == {"3"}
    assert {version for started, _, version in answers if started > rolled_back_at} == {"1"}


def test_a_promoted_challenger_is_swapped_in_and_the_removed_alias_unloaded(live, rows, aliases):
    aliases.set_registered_model_alias(MODEL_NAME, "champion", "2")
    aliases.delete_registered_model_alias(MODEL_NAME, "challenger")
    with live.client() as client:
        outcome = client.post("/admin/reload").json()
        version = client.get("/version").json()
        score = client.post("/v1/score", json={"rows": rows[:1]}).json()
    assert outcome["champion"]["to"] == "2" and outcome["challenger"] == {
        "alias": "challenger",
        "from": "2",
        "to": None,
    }
    assert version["champion"]["version"] == "2" and version["challenger"] is None
    assert score["predictions"][0]["model_version"] == "2"


def test_a_version_that_cannot_serve_is_refused_and_the_serving_one_stays(live, aliases):
    aliases.set_registered_model_alias(MODEL_NAME, "challenger", "4")  # needs loyalty_points
    with live.client() as client:
        response = client.post("/admin/reload")
        version = client.get("/version").json()
    assert response.status_code == 409
    assert (
        "needs inputs the champion's requests do not carry: ['loyalty_points']"
        in response.json()["challenger"]["error"]
    )
    assert version["challenger"]["version"] == "2"


def test_a_release_that_cannot_be_loaded_is_reported_by_its_error_type_only():
    """A load failure's message can name local paths (MLflow artifacts): the service log has it, the response not."""

    def loader(name: str, alias: str, role: str):
        raise OSError("[Errno 2] No such file or directory: '/srv/mlruns/1/0a1b/artifacts/model/MLmodel'")

    releases = Releases(
        MODEL_NAME,
        {"champion": "champion", "challenger": "challenger"},
        {},
        10,
        Traffic(),
        loader=loader,
        resolver=lambda name, alias: "7",
    )
    outcome = releases.refresh()
    assert outcome["champion"] == {"alias": "champion", "error": "OSError (details in the service log)"}
    assert "/srv/" not in json.dumps(outcome, default=str) and releases.state.champion is None


def test_the_poll_interval_picks_up_an_alias_move(registry, online_store, tmp_path, rows):
    settings = serving_settings(tmp_path, online_store["path"], poll_interval_s=0.2)
    client = MlflowClient()
    with live_service(settings) as running, running.client() as http:
        try:
            client.set_registered_model_alias(MODEL_NAME, "champion", "3")
            deadline = time.monotonic() + 10
            while http.get("/version").json()["champion"]["version"] != "3" and time.monotonic() < deadline:
                time.sleep(0.05)
            answer = http.post("/v1/score", json={"rows": rows[:1]}).json()["predictions"][0]["model_version"]
        finally:
            client.set_registered_model_alias(MODEL_NAME, "champion", "1")
    assert answer == "3"


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_requests_errors_latency_and_rows_per_version(live, rows):
    with live.client() as client:
        before = _samples(client.get("/metrics").text)
        assert client.post("/v1/score", json={"rows": rows[:7]}).status_code == 200
        assert client.post("/v1/score", json={"rows": [{}]}).status_code == 422
        assert (
            client.post("/v1/score", json={"rows": rows[:1]}, headers={"Authorization": "Bearer no"}).status_code == 401
        )
        response = client.get("/metrics")
    after = _samples(response.text)
    assert response.headers["content-type"].startswith("text/plain")

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert grew("serving_requests_total", endpoint="/v1/score", status="200") == 1
    assert grew("serving_errors_total", endpoint="/v1/score", error_class="validation") == 1
    assert grew("serving_errors_total", endpoint="/v1/score", error_class="auth") == 1
    assert grew("serving_request_duration_seconds_count", endpoint="/v1/score") == 3
    assert grew("serving_request_duration_seconds_bucket", endpoint="/v1/score", le="+Inf") == 3
    assert grew("serving_scored_rows_total", model_version="1", role="champion", mode="served") == 7
    assert grew("serving_model_duration_seconds_count", model_version="1", role="champion") == 1
    assert after[("serving_model_info", (("model_version", "1"), ("role", "champion")))] == 1
