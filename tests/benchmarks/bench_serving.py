#!/usr/bin/env python
"""Benchmark the online scoring service against ``mlflow models serve`` and the in-process floor.

    python tests/benchmarks/bench_serving.py [--seconds 3] [--repeats 3] [--customers 2000] [--family hist_gradient_boosting]
        [--workdir DIR] [--keep] [--cold-starts 3] [--cold-starts-only]

Everything runs on loopback, in one run, bounded by ``--seconds`` per measurement (20 measurements,
each repeated ``--repeats`` times, the runs interleaved; every figure reported is the median of its runs):

1. **Model.** A pipeline of ``--family`` built exactly as training builds it
   (``build_model_pipeline`` on the real input columns and contracts), fitted on 5,000 synthetic
   training-shaped rows, logged (sklearn flavor, signature, ``pyfunc_predict_fn: predict_proba``) to
   a temporary SQLite MLflow store in the work dir, registered as ``dev.ml.churn_classifier``
   version 1 and made ``champion``.
2. **Online stores.** ``--customers`` customers published to a SQLite online store at the path
   ``conf/base/parameters_serving.yml`` names (``data/07_model_output/dev/online_store.db``, relative to
   the work dir, which is every server's cwd) and to a Redis online store (a ``redis-server`` started
   on a free loopback port, with a password).
3. **SERVICE.** ``python -m lakehouse_ml.serving --env local`` (one process, INFO request logs to a
   file, inference log flushed to Delta in the work dir): ``POST /v1/score/customers`` (features
   looked up in the online store) and ``POST /v1/score`` (features in the payload); a second
   service, ``--env bench_redis`` (a copy of conf/ whose environment serves from Redis), answers
   ``POST /v1/score/customers`` from the Redis store (and logs to its own inference log table).
4. **MLFLOW.** ``mlflow models serve --env-manager local -m models:/dev.ml.churn_classifier/1``:
   ``POST /invocations`` with ``dataframe_split`` payloads of the same rows.
5. **FLOOR.** The same version loaded in this process (``mlflow.sklearn.load_model``) and
   ``predict_proba`` called on a ready pandas frame.

First, cold starts (``--cold-starts`` runs, each server started alone, in turn): the seconds from
the process's start to the service's ``/health`` and ``/ready`` answering 200, and to ``mlflow
models serve``'s ``/ping``, with medians.

All three score with one OpenMP thread per model call (the service's ``serving.model_threads: 1``;
``OMP_NUM_THREADS=1`` for ``mlflow models serve``; ``threadpoolctl`` for the floor's threads).
Each is measured with 1 row and 100 rows per request, by 1 and by 8 concurrent clients (threads,
one keep-alive ``httpx`` client each; the floor's "clients" are threads calling the model). The
clients run in this process, the servers in their own: on 2 cores all of them share the CPU.
Reported: p50/p95/p99 latency (ms) and throughput (requests/s and rows/s), then the ratios the
issues set targets for: single-row p99 with online lookup ÷ floor p99 (target <= 2),
``mlflow models serve`` p50 ÷ service p50 (target >= 2), and per store, 100-row ``mlflow models serve``
(payload) p50 ÷ service online-lookup p50 (target >= 1.5) and with 8 clients the single-row online
lookup's p99 ÷ p50 (target <= 5). The script checks all of them give the same probabilities for the
same rows.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]
for entry in (PROJECT_ROOT, PROJECT_ROOT / "src"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

TOKEN = "bench-serving-token"
FAMILY_PARAMS = {
    "hist_gradient_boosting": {"max_iter": 200, "learning_rate": 0.05, "max_leaf_nodes": 31},
    "logistic_regression": {"C": 1.0},
    "random_forest": {"n_estimators": 100, "max_depth": 10},
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def _wait_for(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{process.args[:4]} exited with {process.returncode}; see its log in the work dir")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} not ready after {timeout:.0f}s")


def _start(command: list[str], workdir: Path, log_name: str, env: dict[str, str]) -> subprocess.Popen:
    log = (workdir / log_name).open("w")
    # Its own session: `mlflow models serve` starts its server as a child, stopped with the group.
    return subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


# ---------------------------------------------------------------- measurement


def _poll(url: str, process: subprocess.Popen, since: float, timeout: float = 120) -> float:
    """Seconds from ``since`` until ``url`` answers 200 (polled every 10 ms)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{process.args[:4]} exited with {process.returncode}; see its log in the work dir")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return time.perf_counter() - since
        time.sleep(0.01)
    raise SystemExit(f"{url} not answering after {timeout:.0f}s")


def cold_starts(
    commands: dict[str, tuple[list[str], list[str]]], workdir: Path, env: dict[str, str], runs: int
) -> None:
    """Start each server ``runs`` times in turn, alone, and print the median seconds from the
    process's start to each of its probe URLs answering 200 (``commands``: name → (argv, urls))."""
    seconds: dict[tuple[str, str], list[float]] = {}
    for run in range(1, runs + 1):
        for name, (command, urls) in commands.items():
            started = time.perf_counter()
            process = _start(command, workdir, f"cold_{name.split()[0]}.log", env)
            try:
                for url in urls:
                    seconds.setdefault((name, url), []).append(_poll(url, process, started))
            finally:
                _signal_group(process, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    _signal_group(process, signal.SIGKILL)
            print(
                f"cold start run {run}/{runs} {name}: "
                + ", ".join(f"{u.rsplit('/', 1)[1]} {seconds[(name, u)][-1]:.2f} s" for u in urls),
                flush=True,
            )
    print(f"\ncold start, medians of {runs} runs in turn (process start to the probe answering 200):")
    for (name, url), values in seconds.items():
        print(
            f"  {name:28s} {url.rsplit('/', 1)[1]:7s} {statistics.median(values):5.2f} s  (runs: {', '.join(f'{v:.2f}' for v in values)})"
        )


def measure(
    make_call: Callable[[int], Callable[[int], Any]], clients: int, seconds: float, warmup: int = 20
) -> dict[str, float]:
    """Latencies of calls by ``clients`` threads for ``seconds`` (after ``warmup`` calls each)."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    stop = threading.Event()

    def client(index: int) -> None:
        call = make_call(index)
        for i in range(warmup):
            call(i)
        start.wait()
        i = 0
        while not stop.is_set():
            began = time.perf_counter()
            call(i)
            latencies[index].append(time.perf_counter() - began)
            i += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    values = sorted(v for per_client in latencies for v in per_client)
    quantiles = statistics.quantiles(values, n=100, method="inclusive")
    return {
        "p50": quantiles[49] * 1000,
        "p95": quantiles[94] * 1000,
        "p99": quantiles[98] * 1000,
        "requests_s": len(values) / elapsed,
        "n": len(values),
    }


def _floor_call(model: Any, frames: list[Any]) -> Callable[[int], Callable[[int], Any]]:
    def make(index: int) -> Callable[[int], Any]:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1)  # as the service's model_threads: 1 (OpenMP limits are per thread)
        return lambda i: model.predict_proba(frames[(i + index) % len(frames)])

    return make


def _http_call(url: str, bodies: list[bytes], headers: dict[str, str]) -> Callable[[int], Callable[[int], Any]]:
    import httpx

    def make(index: int) -> Callable[[int], Any]:
        client = httpx.Client(headers={"Content-Type": "application/json", **headers}, timeout=30)

        def call(i: int) -> None:
            response = client.post(url, content=bodies[(i * 7 + index) % len(bodies)])
            if response.status_code != 200:
                raise SystemExit(f"{url}: HTTP {response.status_code}: {response.text[:300]}")

        return call

    return make


# ---------------------------------------------------------------- set-up


def prepare(workdir: Path, family: str, customers: int, redis: Any) -> dict[str, Any]:
    """Register the model, fill both online stores; the training-shaped rows of the store's customers."""
    import mlflow
    from mlflow import MlflowClient

    from lakehouse_ml.online import SQLiteOnlineStore, open_online_store
    from tests.serving.conftest import MODEL_NAME, feature_rows, model_inputs, register_version, store_rows

    if mlflow.get_experiment_by_name("bench_serving") is None:
        # Artifacts in the work dir: a new experiment's default location is ./mlruns of the cwd (the project).
        mlflow.create_experiment("bench_serving", artifact_location=(workdir / "artifacts").as_uri())
    mlflow.set_experiment("bench_serving")
    training = feature_rows(5000, seed=1)
    started = time.perf_counter()
    version, _model = register_version(training, family, FAMILY_PARAMS[family])
    MlflowClient().set_registered_model_alias(MODEL_NAME, "champion", version)
    print(
        f"model: {family} fitted, logged and registered as {MODEL_NAME} version {version} in {time.perf_counter() - started:.1f}s"
    )

    rows = feature_rows(customers, seed=2)
    ids = [f"c-{i:06d}" for i in range(customers)]
    tables = store_rows({customer: rows.iloc[i] for i, customer in enumerate(ids)})
    path = workdir / "data/07_model_output/dev/online_store.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    as_of = datetime.now(timezone.utc)  # the service's clock (serving.request_time: online_store)
    for store in (SQLiteOnlineStore(str(path)), open_online_store({**redis_store(redis), "password": redis.password})):
        store.publish(
            {
                table: {
                    "rows": frame,
                    "deleted": [],
                    "source_version": 1,
                    "key_columns": ["customer_id"],
                    "as_of": as_of,
                }
                for table, frame in tables.items()
            }
        )
        store.close()
    rows.index = ids
    return {"model_name": MODEL_NAME, "version": version, "ids": ids, "rows": rows, "inputs": model_inputs(training)}


def redis_store(redis: Any) -> dict[str, Any]:
    """The Redis online store's configuration (its password is passed apart, as the service takes it)."""
    return {"type": "redis", "url": redis.url, "namespace": "bench_serving"}


def redis_conf(workdir: Path, redis: Any) -> Path:
    """A copy of the project's conf/ with an environment ``bench_redis`` serving from the Redis store."""
    import yaml

    conf = workdir / "conf"
    shutil.copytree(PROJECT_ROOT / "conf", conf, dirs_exist_ok=True)
    (conf / "bench_redis").mkdir(exist_ok=True)
    # path: null unsets the SQLite store's key that the environment's merge would otherwise keep.
    # Its own inference log, as a second service would have: sharing the first one's table, its
    # measurement would also carry that service's last flushes into the same table.
    serving = {
        "serving": {
            "online_store": {**redis_store(redis), "path": None},
            "inference_log": {"path": str(workdir / "data/lakehouse/bench_redis/monitoring/inference_log")},
        }
    }
    (conf / "bench_redis" / "parameters_serving.yml").write_text(yaml.safe_dump(serving))
    return conf


def _json_rows(frame: Any) -> list[dict[str, Any]]:
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in frame.to_dict("records")]


def bodies(setup: dict[str, Any], size: int, count: int = 50) -> dict[str, list[bytes]]:
    """Request bodies of ``size`` rows for each target, rotating over the customers."""
    import json

    ids, rows, inputs = setup["ids"], setup["rows"], setup["inputs"]
    result: dict[str, list[bytes]] = {"customers": [], "payload": [], "mlflow": []}
    for k in range(count):
        chosen = [ids[(k * size + j) % len(ids)] for j in range(size)]
        frame = rows.loc[chosen, inputs].astype(object)
        result["customers"].append(json.dumps({"customer_ids": chosen}).encode())
        result["payload"].append(json.dumps({"rows": _json_rows(frame)}).encode())
        result["mlflow"].append(
            json.dumps({"dataframe_split": {"columns": inputs, "data": frame.values.tolist()}}).encode()
        )
    return result


def check_agreement(setup: dict[str, Any], model: Any, service: str, mlflow_url: str) -> float:
    """Max abs difference between the three on the same 20 customers' rows."""
    import json

    import httpx
    import numpy as np

    ids = setup["ids"][:20]
    frame = setup["rows"].loc[ids, setup["inputs"]]
    floor = model.predict_proba(frame)[:, 1]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    online = [
        p["probability"]
        for p in httpx.post(f"{service}/v1/score/customers", json={"customer_ids": ids}, headers=headers).json()[
            "predictions"
        ]
    ]
    payload = [
        p["probability"]
        for p in httpx.post(
            f"{service}/v1/score", json={"rows": _json_rows(frame.astype(object))}, headers=headers
        ).json()["predictions"]
    ]
    answer = httpx.post(
        mlflow_url,
        content=json.dumps(
            {"dataframe_split": {"columns": setup["inputs"], "data": frame.astype(object).values.tolist()}}
        ),
        headers={"Content-Type": "application/json"},
    ).json()["predictions"]
    served = [row[1] if isinstance(row, list) else row["1"] for row in answer]
    return float(max(np.max(np.abs(np.array(x) - floor)) for x in (online, payload, served)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement (default 3)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="interleaved runs of every measurement; medians reported (default 3)"
    )
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--family", default="hist_gradient_boosting", choices=sorted(FAMILY_PARAMS))
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument(
        "--cold-starts", type=int, default=3, help="cold starts of each server, measured first (default 3; 0: none)"
    )
    parser.add_argument("--cold-starts-only", action="store_true", help="measure the cold starts, then stop")
    args = parser.parse_args()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_serving_")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    tracking = f"sqlite:///{workdir / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = tracking
    # `mlflow models serve` execs `uvicorn` from PATH: the interpreter's own bin folder first.
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking,
        "LAKEHOUSE_ML_SERVING_TOKEN": TOKEN,
        "OMP_NUM_THREADS": "1",  # what the service's model_threads: 1 does, for mlflow serve too
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    processes: list[subprocess.Popen] = []
    from tests.services.servers import start_redis

    redis = start_redis(workdir / "redis")
    try:
        import mlflow

        setup = prepare(workdir, args.family, args.customers, redis)
        conf = redis_conf(workdir, redis)
        ports = {"service": _free_port(), "mlflow": _free_port(), "redis_service": _free_port()}
        mlflow_cli = str(Path(sys.executable).parent / "mlflow")
        mlflow_serve = [
            mlflow_cli,
            "models",
            "serve",
            "--env-manager",
            "local",
            "-m",
            f"models:/{setup['model_name']}/{setup['version']}",
            "-h",
            "127.0.0.1",
            "-p",
            str(ports["mlflow"]),
        ]
        if args.cold_starts:
            service_command = [sys.executable, "-m", "lakehouse_ml.serving", "--env", "local"]
            cold_starts(
                {
                    "service (SQLite store)": (
                        [*service_command, "--port", str(ports["service"])],
                        [f"http://127.0.0.1:{ports['service']}/{probe}" for probe in ("health", "ready")],
                    ),
                    "mlflow models serve": (mlflow_serve, [f"http://127.0.0.1:{ports['mlflow']}/ping"]),
                },
                workdir,
                env,
                args.cold_starts,
            )
            if args.cold_starts_only:
                return 0
        processes.append(
            _start(
                [sys.executable, "-m", "lakehouse_ml.serving", "--env", "local", "--port", str(ports["service"])],
                workdir,
                "service.log",
                env,
            )
        )
        processes.append(
            _start(
                [
                    sys.executable,
                    "-m",
                    "lakehouse_ml.serving",
                    "--env",
                    "bench_redis",
                    "--conf-source",
                    str(conf),
                    "--port",
                    str(ports["redis_service"]),
                ],
                workdir,
                "service_redis.log",
                {**env, "LAKEHOUSE_ML_ONLINE_STORE_PASSWORD": redis.password},
            )
        )
        processes.append(_start(mlflow_serve, workdir, "mlflow_serve.log", env))
        service, mlflow_base = f"http://127.0.0.1:{ports['service']}", f"http://127.0.0.1:{ports['mlflow']}"
        redis_service = f"http://127.0.0.1:{ports['redis_service']}"
        started = time.perf_counter()
        _wait_for(f"{service}/ready", processes[0])
        _wait_for(f"{redis_service}/ready", processes[1])
        _wait_for(f"{mlflow_base}/ping", processes[2])
        print(
            f"servers ready in {time.perf_counter() - started:.1f}s (service on :{ports['service']} with SQLite, "
            f":{ports['redis_service']} with Redis, mlflow models serve on :{ports['mlflow']})"
        )
        model = mlflow.sklearn.load_model(f"models:/{setup['model_name']}/{setup['version']}")
        for label, url in (("SQLite", service), ("Redis", redis_service)):
            difference = check_agreement(setup, model, url, f"{mlflow_base}/invocations")
            print(
                f"agreement ({label} store): max |probability difference| between service (online and payload), "
                f"mlflow serve and floor = {difference:.2e}"
            )

        auth = {"Authorization": f"Bearer {TOKEN}"}
        runs: dict[tuple[str, int, int], list[dict[str, float]]] = {}
        for run in range(1, args.repeats + 1):
            for size in (1, 100):
                payloads = bodies(setup, size)
                frames = [
                    setup["rows"].loc[setup["ids"][k * size : (k + 1) * size], setup["inputs"]] for k in range(10)
                ]
                targets = {
                    "floor (in-process predict_proba)": _floor_call(model, frames),
                    "service /v1/score/customers (online lookup)": _http_call(
                        f"{service}/v1/score/customers", payloads["customers"], auth
                    ),
                    "service /v1/score/customers (Redis lookup)": _http_call(
                        f"{redis_service}/v1/score/customers", payloads["customers"], auth
                    ),
                    "service /v1/score (payload)": _http_call(f"{service}/v1/score", payloads["payload"], auth),
                    "mlflow models serve /invocations": _http_call(
                        f"{mlflow_base}/invocations", payloads["mlflow"], {}
                    ),
                }
                for name, make in targets.items():
                    for clients in (1, 8):
                        figures = measure(make, clients, args.seconds)
                        runs.setdefault((name, size, clients), []).append(figures)
                        print(
                            f"run {run}/{args.repeats} {name:45s} rows={size:3d} clients={clients}: p50 {figures['p50']:7.2f} ms  "
                            f"p99 {figures['p99']:7.2f} ms",
                            flush=True,
                        )
        # Each figure is the median of the interleaved runs: the machine is shared and noisy.
        results = {
            key: {metric: statistics.median(run[metric] for run in measured) for metric in measured[0]}
            for key, measured in runs.items()
        }
        print(f"\nmedians of {args.repeats} interleaved runs of {args.seconds:g} s each:")
        for (name, size, clients), figures in results.items():
            print(
                f"{name:45s} rows={size:3d} clients={clients}: p50 {figures['p50']:7.2f} ms  p95 {figures['p95']:7.2f} ms  "
                f"p99 {figures['p99']:7.2f} ms  {figures['requests_s']:8.1f} req/s  {figures['requests_s'] * size:9.0f} rows/s  "
                f"(p50 of the runs: {', '.join(format(run['p50'], '.2f') for run in runs[(name, size, clients)])})"
            )

        floor, online = "floor (in-process predict_proba)", "service /v1/score/customers (online lookup)"
        payload, served = "service /v1/score (payload)", "mlflow models serve /invocations"
        on_redis = "service /v1/score/customers (Redis lookup)"
        print("\nonline lookup, by store (the issue's targets):")
        for store, name in (("SQLite", online), ("Redis", on_redis)):
            faster = results[(served, 100, 1)]["p50"] / results[(name, 100, 1)]["p50"]
            tail = results[(name, 1, 8)]["p99"] / results[(name, 1, 8)]["p50"]
            print(
                f"  {store:6s}: rows=100 clients=1: mlflow serve (payload) p50 / service p50 = {faster:5.2f}x   [target >= 1.5x]"
            )
            print(f"  {store:6s}: rows=  1 clients=8: service p99 / p50 = {tail:5.2f}x   [target <= 5x]")
        print("\nratios (clients=1):")
        for size in (1, 100):
            p99_ratio = results[(online, size, 1)]["p99"] / results[(floor, size, 1)]["p99"]
            print(
                f"  rows={size:3d}: service (online lookup) p99 / floor p99 = {p99_ratio:5.2f}x"
                + ("   [target <= 2x]" if size == 1 else "")
            )
            for name in (online, payload):
                ratio = results[(served, size, 1)]["p50"] / results[(name, size, 1)]["p50"]
                print(
                    f"  rows={size:3d}: mlflow serve p50 / {name} p50 = {ratio:5.2f}x"
                    + ("   [target >= 2x]" if size == 1 else "")
                )
        print("ratios (clients=8, throughput rows/s):")
        for size in (1, 100):
            base = results[(served, size, 8)]["requests_s"]
            print(
                f"  rows={size:3d}: service online / mlflow = {results[(online, size, 8)]['requests_s'] / base:5.2f}x, "
                f"service payload / mlflow = {results[(payload, size, 8)]['requests_s'] / base:5.2f}x, "
                f"floor / service online = {results[(floor, size, 8)]['requests_s'] / results[(online, size, 8)]['requests_s']:5.2f}x"
            )
    finally:
        for process in processes:
            _signal_group(process, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
        redis.stop()
        if args.keep:
            print(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
