#!/usr/bin/env python
"""Benchmark the drift metrics: seconds per monitoring window in Spark against pandas/scipy on the same rows.

    python tests/benchmarks/bench_monitoring.py [--rows 100000,1000000] [--repeats 1] [--workdir DIR] [--keep]

For every row count N, synthetic logged predictions (10 numeric and 3 categorical model inputs
named like the model's, a score ``probability``; seeded numpy draws) are written with
``deltalake.write_deltalake`` to two Delta tables in a work dir outside the project (default a
fresh ``/tmp/bench_monitoring_*``, deleted afterwards unless ``--keep``): a baseline window and a
current window of N rows each. The current window drifts on purpose: some numeric features shift
or widen, one gains nulls, the plan tier mix and the scores move; the rest stay as they were.

Two implementations of the same metrics then run on the same tables, in the same process:

1. SPARK: ``lakehouse_ml.monitoring`` on the embedded Sail engine (started as ``tests/conftest.py``
   starts it, before the clock). BASELINE = ``numeric_baseline`` + ``categorical_baseline`` of the
   baseline table (done once per baseline). WINDOW = ``feature_drift(current, profile)`` +
   ``prediction_drift(current, baseline, threshold)`` (which profiles the baseline scores again).
   Both read the Delta tables inside the timed section (Spark has no cache).
2. PANDAS: the same definitions written independently with numpy/scipy (``np.quantile``,
   ``np.searchsorted``, ``scipy.spatial.distance.jensenshannon``) on the tables read into pandas
   with delta-rs (``PandasDeltaDataset``). The read is inside the timed section too and is also
   reported on its own.

A warm-up run on 10,000 rows is not timed. ``--repeats R`` runs both R times (interleaved), the
median is reported. The script checks that the figures agree: the max absolute difference of every
metric across features (PSI, normalised W1, JS distance, L∞, prediction PSI, positive rates) must
be <= 1e-9 (AGREE, else DISAGREE and exit code 1). It also prints, untimed, how far the quantile
form of W1 is from scipy's exact ``wasserstein_distance`` of the same rows.

How to read the output: ``window s`` is wall seconds per monitoring window; ``pandas / spark`` > 1
means Spark is faster. The 1-minute load average before and after shows whether something else
was running (2 cores: a concurrent test suite halves what either side gets).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

PROJECT_ROOT = Path(__file__).resolve().parents[2]
for entry in (PROJECT_ROOT, PROJECT_ROOT / "src"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from lakehouse_ml.monitoring.drift import DECILES, EPSILON, NULL_CATEGORY, W1_QUANTILES  # noqa: E402

NUMERIC = [
    "customer_activity__orders_30d",
    "customer_activity__orders_90d",
    "customer_activity__spend_30d",
    "customer_activity__spend_90d",
    "customer_activity__sessions_7d",
    "customer_activity__tickets_30d",
    "customer_activity__days_since_last_order",
    "customer_activity__avg_basket",
    "customer_profile__age",
    "tenure_days",
]
CATEGORICAL = ["customer_profile__plan_tier", "customer_profile__country", "customer_profile__channel"]
SCORE, THRESHOLD = "probability", 0.3
AGREE_TOLERANCE = 1e-9
WARMUP_ROWS = 10_000


# ================================================================ helpers


def load_average() -> str:
    """The 1-minute load average, or n/a where the OS has none."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:  # pragma: no cover
        return "n/a"


def make_workdir(path: str | None) -> tuple[Path, bool]:
    """The work folder (a fresh tempdir by default) and whether it is ours to delete afterwards."""
    if path is None:
        return Path(tempfile.mkdtemp(prefix="bench_monitoring_")), True
    workdir = Path(path).resolve()
    if workdir.is_relative_to(PROJECT_ROOT):
        sys.exit(f"--workdir {workdir} is inside the project; pick a folder outside {PROJECT_ROOT}")
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir, False


def timed(function, *args: Any) -> tuple[float, Any]:
    """Wall seconds of one call, and its result."""
    started = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - started, result


# ================================================================ synthetic logged predictions


def with_nulls(values: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """``values`` as floats with ``share`` of them NaN (written to Delta as nulls)."""
    out = values.astype(float)
    out[rng.random(len(out)) < share] = np.nan
    return out


def logged_predictions(rows: int, seed: int, drifted: bool) -> pd.DataFrame:
    """One window of logged predictions; ``drifted`` moves some features and the scores."""
    rng = np.random.default_rng(seed)
    shift = 1.0 if drifted else 0.0
    frame = pd.DataFrame(
        {
            "customer_id": np.arange(rows, dtype=np.int64),
            "customer_activity__orders_30d": rng.poisson(3 + shift, rows).astype(np.int64),
            "customer_activity__orders_90d": rng.poisson(9, rows).astype(np.int64),
            "customer_activity__spend_30d": rng.lognormal(3 + 0.3 * shift, 1.0, rows),
            "customer_activity__spend_90d": rng.lognormal(4, 1.0, rows),
            "customer_activity__sessions_7d": with_nulls(rng.poisson(5, rows), 0.02, rng),
            "customer_activity__tickets_30d": rng.poisson(0.3, rows).astype(np.int64),  # mostly 0: tied deciles
            "customer_activity__days_since_last_order": with_nulls(rng.exponential(10, rows), 0.05 + 0.05 * shift, rng),
            "customer_activity__avg_basket": rng.normal(50, 15 + 5 * shift, rows),
            "customer_profile__age": np.clip(rng.normal(40, 12, rows), 18, 90),
            "tenure_days": rng.integers(0, 1500, rows).astype(np.int64),
            "customer_profile__plan_tier": rng.choice(
                ["free", "basic", "premium"], rows, p=[0.5, 0.35, 0.15] if drifted else [0.6, 0.3, 0.1]
            ),
            "customer_profile__country": rng.choice([f"C{k:02d}" for k in range(10)], rows),
            "customer_profile__channel": rng.choice(["web", "app", "store", None], rows, p=[0.5, 0.3, 0.17, 0.03]),
        }
    )
    logit = -1.5 + 0.3 * (frame["customer_activity__tickets_30d"] - frame["customer_activity__orders_30d"] / 3)
    frame[SCORE] = 1 / (1 + np.exp(-(logit + rng.normal(0, 1, rows))))
    return frame


def write_windows(workdir: Path, rows: int) -> tuple[str, str]:
    """The baseline and current windows of ``rows`` rows as Delta tables; their paths."""
    import pyarrow as pa
    from deltalake import write_deltalake

    paths = []
    for name, seed, drifted in (("baseline", 1, False), ("current", 2, True)):
        path = workdir / f"rows_{rows}" / name
        table = pa.Table.from_pandas(logged_predictions(rows, seed, drifted), preserve_index=False)  # NaN -> null
        write_deltalake(str(path), table, mode="overwrite")
        paths.append(str(path))
    return paths[0], paths[1]


# ================================================================ Spark


def spark_baseline(spark, baseline_path: str) -> dict[str, Any]:
    """The baseline profile of every feature (two numeric passes and one categorical group-by)."""
    from lakehouse_ml.monitoring import categorical_baseline, numeric_baseline

    baseline = spark.read.format("delta").load(baseline_path)
    return {**numeric_baseline(baseline, NUMERIC), **categorical_baseline(baseline, CATEGORICAL)}


def spark_window(spark, baseline_path: str, current_path: str, profile: dict[str, Any]) -> dict[str, Any]:
    """Feature drift and prediction drift of the current window."""
    from lakehouse_ml.monitoring import feature_drift, prediction_drift

    baseline, current = (spark.read.format("delta").load(path) for path in (baseline_path, current_path))
    return {
        "features": feature_drift(current, profile),
        "prediction": prediction_drift(current, baseline, THRESHOLD, score_column=SCORE).iloc[0].to_dict(),
    }


# ================================================================ pandas / scipy reference


def read_pandas(path: str, columns: list[str] | None = None) -> pd.DataFrame:
    """A Delta table (or some of its columns) into pandas with delta-rs (the project's reader)."""
    from lakehouse_ml.datasets import PandasDeltaDataset

    return PandasDeltaDataset(filepath=path, columns=columns).load()


def numeric_profile(column: pd.Series) -> dict[str, Any]:
    """Snapped decile edges, shares (null bin last), std and 100 quantiles of one column."""
    values = np.sort(column.dropna().to_numpy(dtype=float))
    snapped = values[np.searchsorted(values, np.quantile(values, DECILES), side="right") - 1]
    edges = np.unique(snapped)
    edges = edges[edges < values[-1]]
    return {
        "edges": edges,
        "shares": numeric_shares(column, edges),
        "std": values.std(ddof=1),
        "quantiles": np.quantile(values, W1_QUANTILES),
    }


def numeric_shares(column: pd.Series, edges: np.ndarray) -> np.ndarray:
    """Shares of all rows in the right-closed bins of ``edges``, and the null share last."""
    values = column.dropna().to_numpy(dtype=float)
    bins = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    return np.append(bins, len(column) - len(values)) / len(column)


def reference_psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """PSI with both shares floored at EPSILON."""
    e, a = np.maximum(expected, EPSILON), np.maximum(actual, EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def category_shares(column: pd.Series) -> pd.Series:
    """Shares of every category, null as NULL_CATEGORY."""
    return column.astype(object).where(column.notna(), NULL_CATEGORY).astype(str).value_counts(normalize=True)


def pandas_baseline(baseline_path: str) -> dict[str, Any]:
    """The reference profile: numeric profiles and category shares."""
    frame = read_pandas(baseline_path)
    return {**{f: numeric_profile(frame[f]) for f in NUMERIC}, **{f: category_shares(frame[f]) for f in CATEGORICAL}}


def pandas_window(baseline_path: str, current_path: str, profile: dict[str, Any]) -> dict[str, Any]:
    """The reference metrics of the current window (reads both tables, as the Spark side does)."""
    from scipy.spatial.distance import jensenshannon

    current = read_pandas(current_path)
    metrics: dict[str, dict[str, float]] = {}
    for f in NUMERIC:
        base = profile[f]
        quantiles = np.quantile(current[f].dropna().to_numpy(dtype=float), W1_QUANTILES)
        metrics[f] = {
            "psi": reference_psi(base["shares"], numeric_shares(current[f], base["edges"])),
            "wasserstein_norm": float(np.mean(np.abs(base["quantiles"] - quantiles)) / base["std"]),
        }
    for f in CATEGORICAL:
        p, q = profile[f].align(category_shares(current[f]), fill_value=0.0)
        metrics[f] = {"js_distance": float(jensenshannon(p, q)), "linf": float(np.max(np.abs(p - q)))}
    baseline_scores = read_pandas(baseline_path, [SCORE])[SCORE]  # prediction_drift reads the baseline scores too
    score_profile = numeric_profile(baseline_scores)
    base_rate, current_rate = ((s.dropna() >= THRESHOLD).mean() for s in (baseline_scores, current[SCORE]))
    prediction = {
        "psi": reference_psi(score_profile["shares"], numeric_shares(current[SCORE], score_profile["edges"])),
        "positive_rate_baseline": float(base_rate),
        "positive_rate_current": float(current_rate),
    }
    return {"features": metrics, "prediction": prediction}


# ================================================================ agreement


def differences(spark_result: dict[str, Any], reference: dict[str, Any]) -> dict[str, float]:
    """Max absolute difference per metric between the Spark and the reference figures."""
    rows = spark_result["features"].set_index("feature")
    worst: dict[str, float] = {}
    for feature, metrics in reference["features"].items():
        for metric, value in metrics.items():
            worst[metric] = max(worst.get(metric, 0.0), abs(float(rows.loc[feature, metric]) - value))
    for metric, value in reference["prediction"].items():
        worst[f"prediction {metric}"] = abs(float(spark_result["prediction"][metric]) - value)
    return worst


def exact_w1_gap(baseline_path: str, current_path: str, spark_result: dict[str, Any]) -> tuple[float, str]:
    """Largest |quantile W1 - scipy's exact W1| in baseline standard deviations, and its feature."""
    from scipy.stats import wasserstein_distance

    baseline, current = read_pandas(baseline_path), read_pandas(current_path)
    rows = spark_result["features"].set_index("feature")
    gaps = {}
    for f in NUMERIC:
        a, b = baseline[f].dropna().to_numpy(dtype=float), current[f].dropna().to_numpy(dtype=float)
        gaps[f] = abs(wasserstein_distance(a, b) / a.std(ddof=1) - rows.loc[f, "wasserstein_norm"])
    feature = max(gaps, key=gaps.get)
    return gaps[feature], feature


# ================================================================ main


def measure(spark, baseline_path: str, current_path: str) -> dict[str, Any]:
    """One timed run of both implementations: baseline profiling and one window each."""
    load_before = load_average()
    spark_profile_s, spark_profile = timed(spark_baseline, spark, baseline_path)
    spark_window_s, spark_result = timed(spark_window, spark, baseline_path, current_path, spark_profile)
    pandas_profile_s, pandas_profile = timed(pandas_baseline, baseline_path)
    pandas_window_s, reference = timed(pandas_window, baseline_path, current_path, pandas_profile)
    read_s, _ = timed(read_pandas, current_path)
    return {
        "spark_profile": spark_profile_s,
        "spark_window": spark_window_s,
        "pandas_profile": pandas_profile_s,
        "pandas_window": pandas_window_s,
        "pandas_read": read_s,
        "load": f"{load_before} -> {load_average()}",
        "spark_result": spark_result,
        "reference": reference,
    }


def report(rows: int, runs: list[dict[str, Any]]) -> bool:
    """Print the medians, the agreement and the drift found; True when the figures agree."""
    median = {
        key: statistics.median(run[key] for run in runs)
        for key in ("spark_profile", "spark_window", "pandas_profile", "pandas_window", "pandas_read")
    }
    print(f"\n{rows:,} rows per window (median of {len(runs)}; load {', '.join(run['load'] for run in runs)})")
    print(
        f"  baseline profile: spark {median['spark_profile']:6.2f} s   pandas {median['pandas_profile']:6.2f} s   "
        f"pandas / spark {median['pandas_profile'] / median['spark_profile']:5.2f}x"
    )
    print(
        f"  window s:         spark {median['spark_window']:6.2f} s   pandas {median['pandas_window']:6.2f} s   "
        f"pandas / spark {median['pandas_window'] / median['spark_window']:5.2f}x   "
        f"(pandas read of the current window alone {median['pandas_read']:.2f} s)"
    )
    worst = differences(runs[-1]["spark_result"], runs[-1]["reference"])
    agree = max(worst.values()) <= AGREE_TOLERANCE
    print(
        f"  {'AGREE' if agree else 'DISAGREE'} (max |spark - pandas| <= {AGREE_TOLERANCE:g}): "
        + ", ".join(f"{metric} {value:.1e}" for metric, value in worst.items())
    )
    features = runs[-1]["spark_result"]["features"]
    print(
        "  status: "
        + ", ".join(
            f"{row.feature.split('__')[-1]} {row.status} ({row.metric} {row.value:.3f})"
            for row in features.itertuples()
        )
    )
    prediction = runs[-1]["spark_result"]["prediction"]
    print(
        f"  prediction: PSI {prediction['psi']:.4f} ({prediction['status']}), positive rate "
        f"{prediction['positive_rate_baseline']:.4f} -> {prediction['positive_rate_current']:.4f} "
        f"({prediction['positive_rate_change']:+.4f})"
    )
    return agree


def main(argv: list[str] | None = None) -> int:
    """Parse the options, write the windows, run both implementations, print the comparison."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", default="100000,1000000", help="rows per window, comma-separated (default 1e5,1e6)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per row count, the median is reported (default 1)")
    parser.add_argument(
        "--workdir", default=None, help="Delta tables (default: a fresh tempdir, deleted unless --keep)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the default tempdir")
    args = parser.parse_args(argv)
    sizes = [int(float(size)) for size in args.rows.split(",")]
    if args.repeats < 1 or min(sizes) < 10:
        parser.error("--repeats must be >= 1 and every --rows >= 10")

    from lakehouse_ml.engine import ENGINE, EngineConfig

    workdir, owned = make_workdir(args.workdir)
    spark = ENGINE.start(EngineConfig(spark_conf={"spark.sql.session.timeZone": "UTC"}))
    try:
        print(
            f"monitoring benchmark: {os.cpu_count()} CPUs, {len(NUMERIC)} numeric + {len(CATEGORICAL)} "
            f"categorical features + score, threshold {THRESHOLD}, workdir {workdir}, load {load_average()}",
            flush=True,
        )
        warm = measure(spark, *write_windows(workdir, WARMUP_ROWS))
        print(f"  warm-up ({WARMUP_ROWS:,} rows, untimed): spark window {warm['spark_window']:.2f} s", flush=True)
        agree = True
        for rows in sizes:
            write_s, (baseline_path, current_path) = timed(write_windows, workdir, rows)
            print(f"  wrote 2 x {rows:,} rows with write_deltalake in {write_s:.1f} s (not timed)", flush=True)
            runs = [measure(spark, baseline_path, current_path) for _ in range(args.repeats)]
            agree = report(rows, runs) and agree
            gap, feature = exact_w1_gap(baseline_path, current_path, runs[-1]["spark_result"])
            print(f"  quantile W1 vs scipy's exact W1: max |diff| {gap:.4f} baseline std ({feature})", flush=True)
        print(f"load average at the end {load_average()}")
        return 0 if agree else 1
    finally:
        ENGINE.stop()
        if owned and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"tables kept in {workdir}")


if __name__ == "__main__":
    sys.exit(main())
