#!/usr/bin/env python
"""Benchmark the local Spark cluster next to the embedded engine: point-in-time join, ingest, tuning.

    python tests/benchmarks/bench_cluster.py [--workers 1,2] [--only pit,ingest,tuning]
        [--spine 1e5] [--features 1e6] [--ingest-scale 0.1] [--trials 16] [--workdir DIR]

Needs Java 17 (the cluster is JVM Spark). For every size in ``--workers`` a local cluster
(``lakehouse_ml.cluster``: standalone master, that many 1-core workers, a Spark Connect server
with Delta Lake, on free loopback ports) is started before its measurements and stopped after;
the embedded engine is measured once, first. Every engine runs the same project code on the same
inputs, each measurement in a child process:

* ``pit``: ``tests/benchmarks/bench_point_in_time.py`` (embedded vs DuckDB, which also generates
  the Delta inputs), then its ``ours`` phase on each cluster: read spine and features, the
  point-in-time join, write the result; the result is compared with the embedded one;
* ``ingest``: ``tests/benchmarks/bench_ingest.py`` phases: the landing files of
  ``--ingest-scale`` simulated once per engine (seeded: identical files), then the ingest pipeline
  timed (``--env local`` embedded, ``--env cluster`` on a cluster); silver and quarantine counts
  must agree;
* ``tuning``: ``run_study`` with the project's search space on a synthetic training frame
  (``--trials`` trials, ``n_jobs`` = 2): local threads on the embedded engine, one Spark task per
  trial on a cluster (``tuning.executor: spark``). The same seed gives the same trials on every
  engine, checked trial by trial.

Printed: seconds per engine, the ratio to the embedded engine (> 1: slower than embedded), trials
per minute for tuning, and where the time goes (engine start, the per-node times of ingest, the
point-in-time phases). Figures on a 2-core machine are dominated by JVM scheduling overhead and
by the cluster and the driver sharing two cores: they say what the cluster costs here, not what
it gains on real machines.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT_ROOT))
BENCHMARKS = Path(__file__).resolve().parent
REMOTE_ENV = "LAKEHOUSE_BENCH_SPARK_REMOTE"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def child(command: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 7200) -> None:
    """Run a benchmark step in a child process; fail loudly with its output's tail."""
    completed = subprocess.run(
        command,
        cwd=cwd,
        env={**os.environ, "RUST_LOG": "warn", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command[:4])} failed ({completed.returncode}):\n"
            f"{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
        )


def result_of(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a benchmark phase that writes its JSON result to ``--result``; return the result."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        path = Path(handle.name)
    try:
        child([*command, "--result", str(path)], cwd, env)
        return json.loads(path.read_text())
    finally:
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------- tuning


def synthetic_training_frame(n_cutoffs: int = 10, per_cutoff: int = 4000, n_features: int = 12):
    """A deterministic churn frame: weekly cutoffs, numeric features, one categorical, nulls."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    n = n_cutoffs * per_cutoff
    signal = rng.normal(size=n)
    columns = {f"t__x{k}": signal * rng.uniform(0.2, 1.0) + rng.normal(size=n) for k in range(n_features)}
    for name in list(columns)[:3]:
        columns[name] = np.where(rng.random(n) < 0.05, np.nan, columns[name])
    return pd.DataFrame(
        {
            "customer_id": [f"c{i % per_cutoff}" for i in range(n)],
            "cutoff_ts": np.repeat(pd.date_range("2024-01-01", periods=n_cutoffs, freq="7D"), per_cutoff),
            **columns,
            "t__plan": rng.choice(["basic", "standard", "premium"], size=n),
            "churned": (signal + rng.normal(scale=1.0, size=n) > 0.8).astype(int),
        }
    )


def phase_tuning(args: argparse.Namespace) -> dict[str, Any]:
    """One study on the engine of ``REMOTE_ENV`` (embedded without it); seconds and the trials."""
    import optuna

    from lakehouse_ml.engine import ENGINE, EngineConfig
    from lakehouse_ml.modeling.folds import time_folds
    from lakehouse_ml.pipelines.tuning.executors import batch_fitter
    from lakehouse_ml.pipelines.tuning.nodes import run_study
    from tests.helpers import project_config

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = os.environ.get(REMOTE_ENV)
    spark_conf = {"spark.sql.session.timeZone": "UTC"}
    config = (
        EngineConfig(mode="remote", remote_url=url, spark_conf=spark_conf)
        if url
        else EngineConfig(spark_conf=spark_conf)
    )
    os.environ.pop("SPARK_REMOTE", None)
    started = time.perf_counter()
    ENGINE.start(config)
    startup = time.perf_counter() - started
    try:
        frame = synthetic_training_frame()
        folds, test = time_folds(frame["cutoff_ts"].tolist(), n_folds=2, test_cutoffs=2, gap_cutoffs=1)
        train = frame[~frame["cutoff_ts"].isin(test)]
        numeric = [c for c in frame.columns if c.startswith("t__x")]
        columns = {"numeric": numeric, "categorical": ["t__plan"], "imputation": {}}
        tuning = {
            **project_config("local")["parameters"]["tuning"],
            "n_trials": args.trials,
            "n_jobs": 2,
            "timeout_s": None,
            "study_name": "bench",
        }
        storage = f"sqlite:///{Path(args.workdir) / f'optuna_{time.time_ns()}.db'}"
        fit_batch = batch_fitter("spark" if url else "threads", train, folds, columns, int(tuning["seed"]))
        started = time.perf_counter()
        result = run_study(train, folds, tuning["search_space"], tuning, None, columns, fit_batch, storage)
        seconds = time.perf_counter() - started
    finally:
        ENGINE.stop()
    return {
        "seconds": seconds,
        "startup": startup,
        "rows": len(train),
        "trials": [(t["number"], t["state"], t["family"], t["value"]) for t in result["trials"]],
    }


# ------------------------------------------------------------------------------------ driver


def start_cluster(workers: int, workdir: Path):
    from lakehouse_ml import cluster

    classic = cluster.project_classic_settings(PROJECT_ROOT)
    config = cluster.ClusterConfig(
        state_dir=workdir / f"cluster_{workers}w",
        workers=workers,
        master_port=free_port(),
        connect_port=free_port(),
        delta_package=classic.get("delta_package"),
        ivy_dir=classic.get("ivy_dir", cluster.DEFAULT_IVY_DIR),
    )
    started = time.perf_counter()
    cluster.start(config)
    try:
        cluster.check_delta(config.remote_url)
    except BaseException:
        cluster.stop(config)
        raise
    return config, time.perf_counter() - started


def measure_pit(args: argparse.Namespace, workdir: Path, url: str | None) -> dict[str, Any]:
    """Embedded: the whole point-in-time benchmark (with DuckDB; it generates the inputs). A
    cluster: its ``ours`` phase on the same inputs, and a comparison with the embedded result."""
    script = str(BENCHMARKS / "bench_point_in_time.py")
    pit_dir = workdir / "pit"
    if url is None:
        child(
            [
                sys.executable,
                script,
                "--spine",
                args.spine,
                "--features",
                args.features,
                "--modes",
                "asof",
                "--runs",
                "1",
                "--repeat",
                "2",
                "--workdir",
                str(pit_dir),
            ],
            PROJECT_ROOT,
        )
        row = json.loads((pit_dir / "results.json").read_text())[0]
        return {
            **row["ours"],
            "duckdb": row["duckdb"].get("seconds", float("nan")),
            "identical": row["compare"]["identical"],
        }
    spine = next(pit_dir.glob(f"spine_{int(float(args.spine))}_e*"))
    features = next(pit_dir.glob(f"features_{int(float(args.features))}_e*"))
    out = workdir / f"pit_{time.time_ns()}"
    # Twice in one session: the first run also pays the cluster's warm-up (classes, Delta's log).
    ours = result_of(
        [
            sys.executable,
            script,
            "--phase",
            "ours",
            "--repeat",
            "2",
            "--spine-path",
            str(spine),
            "--features-path",
            str(features),
            "--mode",
            "asof",
            "--out",
            str(out),
        ],
        PROJECT_ROOT,
        {REMOTE_ENV: url},
    )
    same = result_of(
        [
            sys.executable,
            script,
            "--phase",
            "compare",
            "--spine-path",
            str(out),
            "--features-path",
            str(pit_dir / "out_ours"),
        ],
        PROJECT_ROOT,
    )
    return {**ours, "identical": same["identical"]}


def measure_ingest(args: argparse.Namespace, workdir: Path, url: str | None) -> dict[str, Any]:
    """The landing files of ``--ingest-scale`` simulated (seeded), then the ingest pipeline timed."""
    script = str(BENCHMARKS / "bench_ingest.py")
    env = "local" if url is None else "cluster"
    run_dir = workdir / f"ingest_{time.time_ns()}"
    run_dir.mkdir(parents=True)
    result_of([sys.executable, script, "--phase", "simulate", "--env", env, "--scale", str(args.ingest_scale)], run_dir)
    ingest = result_of(
        [sys.executable, script, "--phase", "ingest", "--env", env],
        run_dir,
        {} if url is None else {"SPARK_REMOTE": url},
    )
    shutil.rmtree(run_dir, ignore_errors=True)
    return {**ingest, "counts": {s: [v["silver_table_rows"], v["quarantined"]] for s, v in ingest["sources"].items()}}


def measure_tuning(args: argparse.Namespace, workdir: Path, url: str | None) -> dict[str, Any]:
    return result_of(
        [sys.executable, __file__, "--phase", "tuning", "--trials", str(args.trials), "--workdir", str(workdir)],
        PROJECT_ROOT,
        {} if url is None else {REMOTE_ENV: url},
    )


MEASURES = {"pit": measure_pit, "ingest": measure_ingest, "tuning": measure_tuning}


def report(bench: str, results: dict[str, dict[str, Any]], args: argparse.Namespace) -> list[str]:
    """Lines for one benchmark: each engine's figures and its ratio to the embedded engine."""
    base = results["embedded"]
    lines = []
    for name, r in results.items():
        if bench == "pit":
            # Per-operator compute time comes from the embedded engine's EXPLAIN ANALYZE only.
            stages = r.get("stages") or {}
            phases = (
                ", ".join(f"{op} {sec:.1f} s" for op, sec in stages.items())
                if stages
                else "no per-operator times on a cluster"
            )
            lines.append(
                f"  {name:>12}: {r['seconds']:6.1f} s (first run {r['cold']:.1f} s) = "
                f"{r['seconds'] / base['seconds']:5.1f}x embedded; {phases}; "
                + ("IDENTICAL" if r["identical"] else "DIFFERENT")
                + (" to DuckDB" if name == "embedded" else " to embedded")
            )
        elif bench == "ingest":
            by_step: dict[str, float] = {}
            for node in r["nodes"]:
                step = node["node"].split(".")[-1]
                by_step[step] = by_step.get(step, 0.0) + node["total"]
            slowest = sorted(by_step.items(), key=lambda kv: -kv[1])[:3]
            lines.append(
                f"  {name:>12}: {r['seconds']:6.1f} s = {r['seconds'] / base['seconds']:5.1f}x embedded; engine start "
                f"{r['startup_seconds']:.1f} s; slowest steps (all sources) "
                + ", ".join(f"{n} {s:.1f} s" for n, s in slowest)
                + ("; silver/quarantine counts AGREE" if r["counts"] == base["counts"] else "; counts DIFFER")
            )
        else:
            rate, base_rate = (len(x["trials"]) / x["seconds"] * 60 for x in (r, base))
            states: dict[str, int] = {}
            for _, state, _, _ in r["trials"]:
                states[state.lower()] = states.get(state.lower(), 0) + 1
            lines.append(
                f"  {name:>12}: {r['seconds']:6.1f} s, {rate:5.1f} trials/min = {rate / base_rate:4.2f}x embedded "
                f"({', '.join(f'{k} {v}' for k, v in sorted(states.items()))}); "
                + ("same trials" if r["trials"] == base["trials"] else "DIFFERENT trials")
            )
    if bench == "pit":
        title = (
            f"point-in-time join, spine {args.spine} x features {args.features}, read + join + write "
            f"(DuckDB {base['duckdb']:.1f} s):"
        )
    elif bench == "ingest":
        title = f"ingest pipeline, simulate.scale {args.ingest_scale:g} (engine start excluded):"
    else:
        title = (
            f"tuning, {args.trials} trials, n_jobs 2 (threads embedded, one Spark task per trial on a cluster), "
            f"{base['rows']:,} training rows:"
        )
    return [title, *lines]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2", help="cluster sizes to measure (default 1,2)")
    parser.add_argument("--only", default=",".join(MEASURES), help="which benchmarks (default pit,ingest,tuning)")
    parser.add_argument("--spine", default="1e5")
    parser.add_argument("--features", default="1e6")
    parser.add_argument("--ingest-scale", type=float, default=0.1)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--workdir", default=None, help="default: a new /tmp/bench_cluster_*")
    parser.add_argument("--phase", choices=["tuning"], help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        Path(args.result).write_text(json.dumps(phase_tuning(args), default=str))
        return 0

    from lakehouse_ml import cluster

    benches = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = sorted(set(benches) - set(MEASURES))
    if unknown:
        parser.error(f"--only: unknown {unknown}; choose from {sorted(MEASURES)}")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_cluster_", dir="/tmp")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"bench_cluster: {os.cpu_count()} CPUs, workers {args.workers}, {', '.join(benches)}; work dir {workdir}",
        flush=True,
    )
    results: dict[str, dict[str, dict[str, Any]]] = {bench: {} for bench in benches}
    started = time.perf_counter()
    # The embedded engine first, with no cluster running; then one cluster size at a time.
    for size in [None, *[int(n) for n in args.workers.split(",") if n.strip()]]:
        config, name, url = None, "embedded", None
        if size is not None:
            config, seconds = start_cluster(size, workdir)
            name, url = f"cluster {size}w", config.remote_url
            print(f"cluster with {size} worker(s) up in {seconds:.0f} s at {url}", flush=True)
        try:
            for bench in benches:
                began = time.perf_counter()
                results[bench][name] = MEASURES[bench](args, workdir, url)
                print(f"  {bench} on {name}: {time.perf_counter() - began:.0f} s", flush=True)
        finally:
            if config is not None:
                cluster.stop(config)
    (workdir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print()
    for bench in benches:
        print("\n".join(report(bench, results[bench], args)))
    print(f"bench_cluster finished in {time.perf_counter() - started:.0f} s; results in {workdir / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
