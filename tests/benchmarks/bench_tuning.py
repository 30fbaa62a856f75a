#!/usr/bin/env python
"""Benchmark the tuning study: trials/min with ``n_jobs=1`` vs ``n_jobs=2``, and MLflow tracking overhead.

    python tests/benchmarks/bench_tuning.py [--trials 20] [--repeats 1] [--training-set PATH]
        [--storage sqlite|memory] [--warmup 3] [--openmp-threads N] [--workdir DIR] [--keep] [--verbose]

Run from the project root after ``kedro run`` (it reads the default training set, read-only).
The study is the project's own: ``prepare_tuning`` + ``run_study`` from
``lakehouse_ml.pipelines.tuning.nodes`` with ``tuning`` from the project's parameters
(``project_config("local")``), changed only in ``n_trials`` (``--trials``), ``n_jobs``,
``timeout_s`` (none: every variant runs exactly ``--trials`` trials) and a unique ``study_name``;
the study storage (the ``optuna_storage`` catalog entry in a project run) is a fresh Optuna SQLite
file in ``--workdir`` per measurement, or in-memory, so no run ever resumes another. Per repeat, in one process, three variants are timed:

1. ``untracked n_jobs=1``: ``parent_run_id=None``, trials run one after another;
2. ``tracked   n_jobs=1``: the same study (same seed, same trial count) under a parent MLflow
   run in a temporary SQLite MLflow store (``<workdir>/mlflow.db``): every trial is a nested run
   (tag ``mlflow.parentRunId``) with its params, per-fold metrics, duration and state. The store,
   the experiment and the parent run are created before the clock starts; afterwards the nested
   runs under the parent are counted in the store;
3. ``untracked n_jobs=2``: trials in two Optuna worker threads.

1 and 2 swap places on every other repeat; 3 comes last. Timed: the ``run_study`` call only (wall
clock and process CPU seconds, all threads included).
A short untimed warm-up study (``--warmup`` trials) first pays the one-off import and first-fit
costs, so they do not land on whichever variant runs first.

How to read the output:

* ``tracking overhead = (tracked - untracked) / untracked`` wall seconds, both at ``n_jobs=1``.
  With the same seed, sequential TPE draws are identical, so both studies fit the same models and
  prune the same trials: the difference is the logging. The script checks this (``same trials``:
  states, families and values trial by trial). Target: overhead < 10% -> PASS, else FAIL
  (exit code 1). Cross-check: the tracked run also times its own MLflow calls (every method of
  the node's ``_TrialRun``, wrapped with a timer) and prints ``logging / (tracked - logging)``,
  i.e. logging relative to the rest of the same run. On a shared machine the end-to-end figure
  compares two runs under different loads and can be off by tens of % either way (a warning says
  so when the two disagree by more than 5 points); the cross-check is not exposed to that.
* ``speedup n_jobs=2 / n_jobs=1`` = ratio of trials/min. Pruning makes trial cost vary, and
  thread-parallel TPE draws differ from sequential ones (a trial is drawn without the result of
  the trial still running in the other thread), so the two studies do not do the same work:
  compare the complete/pruned counts and the per-family trial counts printed with them (random
  forests cost several times a logistic regression; a pruned trial stops after its first fold).
  Whether the ``n_jobs=2`` draws also change from run to run depends on how ``run_study``
  parallelises (Optuna's threaded ``optimize(n_jobs=...)``: yes; a seeded ask/tell batch: no);
  the per-repeat lines show it. For equal work the ceiling on 2 cores is 2x, less when the models
  already use both cores (HistGradientBoosting's OpenMP), hold the GIL or, with batches, when one
  trial of a batch waits for a slower one; a figure above 2x means the parallel study drew
  cheaper trials or the load changed in between.
* ``CPU/wall`` above 1 means more than one core was busy. The 1-minute load average
  before and after each measurement shows whether something else was running: treat runs under a
  high load (another test suite) as noisy. It is worse than a fair share of the cores: with
  another busy process, HistGradientBoosting's two OpenMP threads keep waiting for each other at
  every barrier, and the same 20 trials can take 10x the CPU and wall time. ``--openmp-threads 1``
  makes the fits single-threaded and far less sensitive to that (a different configuration from
  ``kedro run``'s, but the same for both sides of the tracking comparison).

With ``--repeats R`` every variant runs R times (interleaved) and the median is reported.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Self

PROJECT_ROOT = Path(__file__).resolve().parents[2]
for entry in (PROJECT_ROOT, PROJECT_ROOT / "src"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

DEFAULT_TRAINING_SET = "data/lakehouse/dev/ml/training_set"
OVERHEAD_TARGET = 0.10
PARENT_TAG = "mlflow.parentRunId"
VARIANTS = (  # (label, n_jobs, tracked)
    ("untracked n_jobs=1", 1, False),
    ("tracked   n_jobs=1", 1, True),
    ("untracked n_jobs=2", 2, False),
)


# ================================================================ helpers


def load_average() -> str:
    """The 1-minute load average, or n/a where the OS has none."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:  # pragma: no cover
        return "n/a"


def openmp_threads() -> str:
    """The OpenMP thread count(s) the loaded runtimes will use (HistGradientBoosting's parallelism)."""
    from threadpoolctl import threadpool_info

    counts = sorted({str(pool["num_threads"]) for pool in threadpool_info() if pool["user_api"] == "openmp"})
    return "/".join(counts) or "n/a"


def quiet_logging(verbose: bool) -> None:
    """Silence Optuna's and the tuning node's per-trial lines unless ``--verbose``."""
    import optuna

    level = logging.INFO if verbose else logging.WARNING
    optuna.logging.set_verbosity(level)
    for name in ("lakehouse_ml", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(level)


def make_workdir(path: str | None) -> tuple[Path, bool]:
    """The work folder (a fresh tempdir by default) and whether it is ours to delete afterwards."""
    if path is None:
        return Path(tempfile.mkdtemp(prefix="bench_tuning_")), True
    workdir = Path(path).resolve()
    if workdir.is_relative_to(PROJECT_ROOT):
        sys.exit(f"--workdir {workdir} is inside the project; pick a folder outside {PROJECT_ROOT}")
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir, False


# ================================================================ inputs


def load_inputs(training_set_path: str) -> tuple[dict[str, Any], tuple]:
    """The project's parameters and ``prepare_tuning``'s output on the training set."""
    from lakehouse_ml.datasets import PandasDeltaDataset
    from lakehouse_ml.pipelines.tuning.nodes import prepare_tuning
    from tests.helpers import project_config

    path = Path(training_set_path)
    if not path.is_absolute():
        path = PROJECT_ROOT / path
    if not (path / "_delta_log").is_dir():
        sys.exit(f"no Delta training set at {path}: run `kedro run` first (or pass --training-set PATH)")
    params = project_config("local")["parameters"]
    training_set = PandasDeltaDataset(filepath=str(path)).load()
    prepared = prepare_tuning(training_set, params["feature_tables"], params["on_demand_features"], params["tuning"])
    return params, prepared


def tuning_for(base: dict[str, Any], trials: int, n_jobs: int, tag: str) -> dict[str, Any]:
    """The project's ``tuning`` dict for one measurement: unique study, no timeout."""
    return {
        **base,
        "n_trials": trials,
        "n_jobs": n_jobs,
        "timeout_s": None,
        "study_name": f"bench_{tag}_{uuid.uuid4().hex[:8]}",
    }


def optuna_storage(kind: str, workdir: Path, tag: str) -> str | None:
    """A fresh Optuna SQLite file per measurement, or None (in-memory)."""
    if kind == "memory":
        return None
    path = workdir / "optuna" / f"{tag}_{uuid.uuid4().hex[:8]}.db"
    path.parent.mkdir(parents=True, exist_ok=True)  # SQLite creates the file, not its folder
    return f"sqlite:///{path}"


# ================================================================ MLflow


def mlflow_experiment(workdir: Path) -> str:
    """Point MLflow at ``<workdir>/mlflow.db`` (schema created now, outside the clock); the experiment id."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{workdir}/mlflow.db")
    name = "bench_tuning"
    experiment = mlflow.get_experiment_by_name(name)
    if experiment:
        return experiment.experiment_id
    # Artifacts in the work dir, not in ./mlruns of the cwd (the project).
    return mlflow.create_experiment(name, artifact_location=(workdir / "artifacts").as_uri())


def nested_runs(experiment_id: str, parent_run_id: str) -> Counter:
    """Nested runs under ``parent_run_id`` in the store, counted by run status."""
    from mlflow.tracking import MlflowClient

    client, statuses, token = MlflowClient(), Counter(), None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
            max_results=1000,
            page_token=token,
        )
        statuses.update(run.info.status for run in page)
        token = page.token
        if not token:
            return statuses


# ================================================================ one measurement


class LoggingClock:
    """Wall seconds spent inside the tuning node's ``_TrialRun`` (create, log, end: all the MLflow calls).

    Used as a context manager around a tracked study: it wraps the three methods with a timer and
    restores them on exit. A direct measure of the logging cost, which unlike the difference of two
    study timings does not drown in the fit-time noise of a shared machine.
    """

    METHODS = ("__init__", "log", "end")

    def __init__(self) -> None:
        """No time counted yet."""
        self.seconds, self.calls, self._saved = 0.0, 0, {}

    def __enter__(self) -> Self:
        """Wrap the methods."""
        from lakehouse_ml.pipelines.tuning import nodes

        for name in self.METHODS:
            original = self._saved[name] = getattr(nodes._TrialRun, name)
            setattr(nodes._TrialRun, name, self._timed(original))
        return self

    def __exit__(self, *exc: object) -> None:
        """Restore the methods."""
        from lakehouse_ml.pipelines.tuning import nodes

        for name, original in self._saved.items():
            setattr(nodes._TrialRun, name, original)

    def _timed(self, method):
        """``method`` adding its wall time to the clock."""

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
                self.calls += 1

        return wrapper


def timed_study(
    prepared: tuple, tuning: dict[str, Any], parent_run_id: str | None, storage: str | None
) -> dict[str, Any]:
    """``run_study`` timed: wall and CPU seconds, load average around it, and the study's result."""
    from lakehouse_ml.pipelines.tuning.nodes import run_study

    train, folds, _test, columns = prepared
    load_before = load_average()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    result = run_study(train, folds, tuning["search_space"], tuning, parent_run_id, columns, storage=storage)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    finished = result["trial_counts"]["complete"] + result["trial_counts"]["pruned"]
    return {
        "wall": wall,
        "cpu": cpu,
        "load_before": load_before,
        "load_after": load_average(),
        "trials_per_min": 60 * finished / wall,
        "counts": result["trial_counts"],
        "best": result["best_value"],
        "trials": result["trials"],
    }


def run_order(repeat: int) -> list[tuple[str, int, bool]]:
    """The variants of one repeat: untracked/tracked in alternating order (drift in the machine's
    load then hits both alike over an even number of repeats), then ``n_jobs=2``."""
    sequential = list(VARIANTS[:2]) if repeat % 2 == 0 else list(reversed(VARIANTS[:2]))
    return [*sequential, VARIANTS[2]]


def measure(
    variant: tuple[str, int, bool],
    prepared: tuple,
    params: dict,
    args: argparse.Namespace,
    workdir: Path,
    experiment_id: str | None,
    repeat: int,
) -> dict[str, Any]:
    """One variant once; a tracked one runs under a fresh parent run and counts its nested runs."""
    import mlflow

    label, n_jobs, tracked = variant
    tag = f"{'tracked' if tracked else 'untracked'}_j{n_jobs}_r{repeat}"
    tuning = tuning_for(params["tuning"], args.trials, n_jobs, tag)
    storage = optuna_storage(args.storage, workdir, tag)
    if not tracked:
        return {"label": label, **timed_study(prepared, tuning, None, storage)}
    with mlflow.start_run(experiment_id=experiment_id, run_name=tag) as parent, LoggingClock() as clock:
        row = timed_study(prepared, tuning, parent.info.run_id, storage)
    return {
        "label": label,
        **row,
        "logging": clock.seconds,
        "logging_calls": clock.calls,
        "nested": nested_runs(experiment_id, parent.info.run_id),
    }


def warm_up(prepared: tuple, params: dict, trials: int) -> float:
    """An untimed in-memory study of ``trials`` trials (imports, first fits); its wall seconds."""
    if trials <= 0:
        return 0.0
    tuning = tuning_for(params["tuning"], trials, 1, "warmup")
    return timed_study(prepared, tuning, None, None)["wall"]


# ================================================================ reporting


def same_trials(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two studies ran the same trials: state, family and value, trial by trial."""

    def key(row: dict) -> list[tuple]:
        return [(t["state"], t["family"], None if t["value"] is None else round(t["value"], 12)) for t in row["trials"]]

    return key(a) == key(b)


def trial_mix(row: dict[str, Any]) -> str:
    """Complete/pruned counts and trials per family, e.g. ``13 complete / 7 pruned; random_forest 9, ...``."""
    counts = Counter(t["family"] for t in row["trials"])
    per_family = ", ".join(f"{family} {n}" for family, n in sorted(counts.items()))
    return f"{row['counts']['complete']} complete / {row['counts']['pruned']} pruned; {per_family}"


def print_row(row: dict[str, Any]) -> None:
    """One measurement as one line (plus its nested-run count when tracked)."""
    counts, best = row["counts"], "-" if row["best"] is None else f"{row['best']:.4f}"
    line = (
        f"  {row['label']}: {row['wall']:7.1f} s wall, {row['cpu']:7.1f} s CPU "
        f"(CPU/wall {row['cpu'] / row['wall']:.2f}), {row['trials_per_min']:5.2f} trials/min, "
        f"{counts['complete']} complete / {counts['pruned']} pruned / {counts['fail']} failed, "
        f"best {best}, load {row['load_before']} -> {row['load_after']}"
    )
    if "nested" in row:
        nested = row["nested"]
        line += (
            f"\n      MLflow: {sum(nested.values())} nested trial runs under the parent "
            f"({', '.join(f'{s} {n}' for s, n in sorted(nested.items()))}); "
            f"{row['logging']:.2f} s inside the trial runs' MLflow calls ({row['logging_calls']} calls)"
        )
    print(line, flush=True)


def median_of(rows: list[dict[str, Any]], key: str) -> float:
    """Median of one figure over the repeats of a variant."""
    return statistics.median(row[key] for row in rows)


def summarize(results: dict[str, list[dict[str, Any]]], trials: int) -> bool:
    """The summary lines; True when the tracking overhead meets the target."""
    untracked, tracked, parallel = (results[label] for label, _, _ in VARIANTS)
    print(f"\nsummary (median of {len(untracked)} repeat(s), {trials} trials each; timed: run_study only)")
    for label, _, _ in VARIANTS:
        rows = results[label]
        fastest = f" (fastest {min(row['wall'] for row in rows):.1f} s)" if len(rows) > 1 else ""
        print(
            f"  {label}: {median_of(rows, 'wall'):7.1f} s wall{fastest}, {median_of(rows, 'cpu'):7.1f} s CPU, "
            f"{median_of(rows, 'trials_per_min'):5.2f} trials/min"
        )

    speedup = median_of(parallel, "trials_per_min") / median_of(untracked, "trials_per_min")
    print(
        f"  speedup n_jobs=2 / n_jobs=1: {speedup:.2f}x trials/min "
        f"(not like for like: thread-parallel TPE draws differ from sequential ones, so the "
        f"models fitted and the trials pruned differ)"
    )
    print(f"      n_jobs=1: {trial_mix(untracked[0])}")
    for repeat, row in enumerate(parallel, 1):
        print(f"      n_jobs=2 (repeat {repeat}): {trial_mix(row)}")

    untracked_wall, tracked_wall = median_of(untracked, "wall"), median_of(tracked, "wall")
    overhead = (tracked_wall - untracked_wall) / untracked_wall
    identical = all(same_trials(u, t) for u, t in zip(untracked, tracked, strict=True))
    nested_ok = all(sum(t["nested"].values()) == len(t["trials"]) for t in tracked)
    print(
        f"  tracking overhead = (tracked - untracked) / untracked = "
        f"({tracked_wall:.1f} - {untracked_wall:.1f}) / {untracked_wall:.1f} = {overhead:+.1%} "
        f"(n_jobs=1, same seed; same trials: {'yes' if identical else 'NO'}; "
        f"one nested run per trial: {'yes' if nested_ok else 'NO'})"
    )
    if len(tracked) > 1:
        best_untracked, best_tracked = (min(row["wall"] for row in rows) for rows in (untracked, tracked))
        print(
            f"      on the fastest runs: ({best_tracked:.1f} - {best_untracked:.1f}) / "
            f"{best_untracked:.1f} = {(best_tracked - best_untracked) / best_untracked:+.1%}"
        )
    direct = statistics.median(t["logging"] / (t["wall"] - t["logging"]) for t in tracked)
    print(
        f"  cross-check, logging timed inside the tracked study: {median_of(tracked, 'logging'):.2f} s; "
        f"logging / (tracked - logging) = {direct:+.1%} "
        f"({'PASS' if direct < OVERHEAD_TARGET else 'FAIL'}; "
        f"one run, so not skewed by a load that differs between runs)"
    )
    passed = overhead < OVERHEAD_TARGET
    print(
        f"  {'PASS' if passed else 'FAIL'}: tracking overhead {overhead:+.1%} "
        f"{'<' if passed else '>='} {OVERHEAD_TARGET:.0%} target"
    )
    if not identical:
        print("  warning: the tracked and untracked studies ran different trials, the overhead compares unequal work")
    if abs(overhead - direct) > 0.05:
        print(
            f"  warning: the end-to-end overhead and the cross-check differ by {abs(overhead - direct):.0%} points: "
            f"run-to-run noise (see the load averages) is larger than the logging cost; "
            f"trust the cross-check, or rerun on a quiet machine with --repeats 3 (and --openmp-threads 1)"
        )
    return passed


# ================================================================ main


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run every variant ``--repeats`` times, print the measurements and summary."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=20, help="finished trials per study (default 20)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per variant, the median is reported (default 1)")
    parser.add_argument(
        "--training-set",
        default=DEFAULT_TRAINING_SET,
        help=f"Delta training set, relative to the project root (default {DEFAULT_TRAINING_SET})",
    )
    parser.add_argument(
        "--storage",
        choices=("sqlite", "memory"),
        default="sqlite",
        help="Optuna storage: a fresh SQLite file per study as the project configures (default), or in-memory",
    )
    parser.add_argument(
        "--warmup", type=int, default=3, help="trials of the untimed warm-up study (default 3; 0: none)"
    )
    parser.add_argument(
        "--workdir",
        default=None,
        help="Optuna and MLflow stores (default: a fresh tempdir, deleted at the end unless --keep)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the default tempdir (stores for inspection)")
    parser.add_argument("--verbose", action="store_true", help="Optuna's and the tuning node's per-trial log lines")
    parser.add_argument(
        "--openmp-threads",
        type=int,
        default=None,
        help="set OMP_NUM_THREADS (default: unset, the libraries' own choice, as in `kedro run`)",
    )
    args = parser.parse_args(argv)
    if args.trials < 1 or args.repeats < 1:
        parser.error("--trials and --repeats must be >= 1")
    if args.openmp_threads is not None:  # read when the OpenMP runtime loads: before sklearn is imported
        os.environ["OMP_NUM_THREADS"] = str(args.openmp_threads)

    workdir, owned = make_workdir(args.workdir)
    try:
        params, prepared = load_inputs(args.training_set)
        quiet_logging(args.verbose)
        train, folds, _test, columns = prepared
        print(
            f"tuning benchmark: {os.cpu_count()} CPUs, {len(train):,} tuning rows, {len(folds)} folds, "
            f"{len(columns['numeric'])} numeric + {len(columns['categorical'])} categorical features, "
            f"{args.trials} trials, seed {params['tuning']['seed']}, Optuna storage {args.storage}, "
            f"OpenMP threads {openmp_threads()}, workdir {workdir}, load average {load_average()}",
            flush=True,
        )
        experiment_id = mlflow_experiment(workdir)
        print(f"  warm-up ({args.warmup} trials, untimed): {warm_up(prepared, params, args.warmup):.1f} s", flush=True)

        results: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in VARIANTS}
        for repeat in range(args.repeats):
            print(f"repeat {repeat + 1}/{args.repeats}", flush=True)
            for variant in run_order(repeat):
                row = measure(variant, prepared, params, args, workdir, experiment_id, repeat)
                results[variant[0]].append(row)
                print_row(row)
        passed = summarize(results, args.trials)
        print(f"load average at the end {load_average()}")
        return 0 if passed else 1
    finally:
        if owned and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"stores kept in {workdir}")


if __name__ == "__main__":
    sys.exit(main())
