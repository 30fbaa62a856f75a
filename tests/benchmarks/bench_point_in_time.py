#!/usr/bin/env python
"""Benchmark point-in-time lookups: ``build_training_set`` on the Spark engine vs DuckDB ASOF JOIN.

    python tests/benchmarks/bench_point_in_time.py [--spine 1e5,1e6] [--features 1e6,1e7]
        [--modes asof,filtered] [--runs 3] [--repeat 2] [--workdir DIR] [--fresh]

For every (spine rows, feature rows) pair, in ``--workdir`` (default: <tmp>/bench_point_in_time):

1. GENERATE (once, cached): a Delta feature table of N rows (100 rows per entity over 2025,
   hourly ``feature_ts`` with ~15% ties on (entity, feature_ts) broken by ``ingested_at``,
   ``ingested_at`` 0-48 h later and 1% NULL, 0.05% NULL keys, 2% NULL features) and a Delta spine
   (random instants over 2025, 0.05% NULL keys and NULL times). Values are derived in-engine
   from ``xxhash64(id, salt)``: deterministic, never ``rand()`` (broken on Sail);
2. OURS: read both Delta tables, ``build_training_set`` with one lookup of 3 features and a
   30-day lookback, write the result as Delta: timed from the read to the committed write, on
   the embedded engine of ``conf/base/spark.yml`` (started before the clock);
3. DUCKDB: the same rules with DuckDB, timed the same way: Delta → Arrow with deltalake,
   the query, Arrow → Delta with deltalake. ``asof``: ties on (entity, feature_ts) reduced to
   the row with the greatest ``ingested_at`` (NULL lowest) by ``arg_max``, then
   ``ASOF LEFT JOIN ... ON entity = entity AND ts >= feature_ts`` and the lookback as a CASE.
   ``filtered`` (``filter_by_ingested_at``: a row counts from max(feature_ts, ingested_at)):
   DuckDB has no as-of join with a second eligibility column, so a running ``arg_max`` over
   availability time per entity (a window), then the same ASOF join on availability;
4. COMPARE: both result tables are read back, sorted by ``spine_id`` and compared column by
   column: IDENTICAL or the number of differing rows.

Modes: ``asof`` (ingested_at only breaks ties) and ``filtered`` (filter_by_ingested_at=True).
Every step runs in its own child process, so the peak RSS reported is the step's own (the
embedded engine runs in the child: its memory is included). Each engine runs ``--runs`` times,
interleaved, each process measuring ``--repeat`` times; figures are medians over the processes
of their last measurement ("cold": of their first). The ratio is ours ÷ DuckDB seconds (< 1:
ours is faster). "Where the time goes" for ours: compute seconds per physical operator from the
embedded engine's ``EXPLAIN ANALYZE`` of the same plan, after the timed runs. A DuckDB failure
is printed beside our time (DuckDB gets the memory budget ours is measured against, 16 GB).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]
for entry in (PROJECT_ROOT, PROJECT_ROOT / "src"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

START_US = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z
HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
ROWS_PER_ENTITY = 100
LOOKBACK = "30 days"
FEATURES = ("f_amount", "f_count", "f_cat")
MODES = ("asof", "filtered")
MARKER = ".bench_point_in_time"
DUCKDB_MEMORY = "16GB"


# ================================================================ shared helpers


def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rows_label(value: int) -> str:
    exponent = len(str(value)) - 1
    return f"1e{exponent}" if value == 10**exponent else f"{value:,}"


def parse_sizes(text: str) -> list[int]:
    return [int(float(part)) for part in text.split(",") if part.strip()]


def entities_for(feature_rows: int) -> int:
    return max(feature_rows // ROWS_PER_ENTITY, 1)


def start_engine():
    """The embedded engine exactly as ``kedro run`` starts it (conf/base/spark.yml), or the Spark
    Connect server ``LAKEHOUSE_BENCH_SPARK_REMOTE`` names (bench_cluster.py's clusters)."""
    from lakehouse_ml.engine import ENGINE, EngineConfig

    url = os.environ.get("LAKEHOUSE_BENCH_SPARK_REMOTE")
    if url:
        os.environ.pop("SPARK_REMOTE", None)
        config = EngineConfig(mode="remote", remote_url=url, spark_conf={"spark.sql.session.timeZone": "UTC"})
        return ENGINE, ENGINE.start(config)
    try:
        from tests.helpers import project_config

        config = EngineConfig.from_dict(project_config("local")["spark"])
    except Exception:  # noqa: BLE001 - the benchmark must not depend on the conf layout
        config = EngineConfig(spark_conf={"spark.sql.session.timeZone": "UTC"})
    return ENGINE, ENGINE.start(config)


def read_delta(path: str):
    """A Delta table as one pyarrow Table through delta-rs' query engine (multi-threaded; the
    plain threaded ``to_pyarrow_table`` can abort the interpreter at exit, see the engine notes)."""
    import pyarrow as pa
    from deltalake import DeltaTable, QueryBuilder

    return pa.table(QueryBuilder().register("t", DeltaTable(path)).execute("SELECT * FROM t").read_all())


# ================================================================ phases (child processes)


def phase_generate(args: argparse.Namespace) -> dict[str, Any]:
    from pyspark.sql import functions as F

    engine, spark = start_engine()
    started = time.perf_counter()
    try:
        entities = args.entities

        def h(salt: int, column: str = "id"):
            return F.xxhash64(F.col(column), F.lit(salt))

        def u(salt: int, modulo: int, column: str = "id"):
            return F.pmod(h(salt, column), F.lit(modulo))

        if args.kind == "features":
            # row j of an entity gets its own 87-hour slot of 2025 (so feature_ts never collides
            # by chance); ~30% of odd rows copy the previous row's feature_ts (a deliberate tie,
            # broken by ingested_at, which is NULL only on even rows: no NULL-NULL ties).
            slot = 8760 // ROWS_PER_ENTITY
            j = F.floor(F.col("id") / F.lit(entities)).cast("bigint")
            own_hour = j * F.lit(slot) + u(3, slot)
            partner = (F.col("id") - F.lit(entities)).alias("partner")
            partner_hour = (j - F.lit(1)) * F.lit(slot) + F.pmod(F.xxhash64(partner, F.lit(3)), F.lit(slot))
            hour = F.when((j % 2 == 1) & (u(15, 10) < 3), partner_hour).otherwise(own_hour)
            feature_us = F.lit(START_US) + hour * F.lit(HOUR_US)
            frame = spark.range(args.rows).select(
                F.when(u(2, 10_000) >= 5, F.col("id") % F.lit(entities)).alias("entity_id"),
                F.timestamp_micros(feature_us).alias("feature_ts"),
                F.when((j % 2 == 1) | (u(5, 50) > 0), F.timestamp_micros(feature_us + u(4, 48 * HOUR_US))).alias(
                    "ingested_at"
                ),
                F.when(u(7, 50) > 0, u(6, 1_000_000) / F.lit(100.0)).alias("f_amount"),
                u(8, 1000).alias("f_count"),
                F.concat(F.lit("c"), u(9, 100).cast("string")).alias("f_cat"),
            )
        else:
            frame = spark.range(args.rows).select(
                F.col("id").alias("spine_id"),
                F.when(u(10, 10_000) >= 5, u(11, entities)).alias("entity_id"),
                F.when(u(14, 10_000) >= 5, F.timestamp_micros(F.lit(START_US) + u(12, 365 * DAY_US))).alias("ts"),
                u(13, 2).cast("int").alias("label"),
            )
        frame.write.format("delta").mode("overwrite").save(args.out)
        return {"seconds": time.perf_counter() - started, "peak_mb": peak_rss_mb()}
    finally:
        engine.stop()


_ELAPSED = re.compile(r"^\s*(\w+): .*?elapsed_compute=([\d.]+)(ns|µs|us|ms|s)\b")
_UNIT_SECONDS = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def operator_seconds(spark, frame) -> dict[str, float]:
    """Where the time goes: compute seconds per kind of physical operator, summed over the plan's
    operators and partitions (CPU time, so it may exceed wall time), from the embedded engine's
    ``EXPLAIN ANALYZE``; empty where the engine has none (a JVM cluster)."""
    frame.createOrReplaceTempView("bench_point_in_time")
    try:
        plan = spark.sql("EXPLAIN ANALYZE SELECT * FROM bench_point_in_time").collect()[0][0]
    except Exception:  # noqa: BLE001 - JVM Spark has no EXPLAIN ANALYZE
        return {}
    seconds: dict[str, float] = {}
    for line in plan.splitlines():
        match = _ELAPSED.match(line)
        if match:
            name = match.group(1).removesuffix("Exec")
            seconds[name] = seconds.get(name, 0.0) + float(match.group(2)) * _UNIT_SECONDS[match.group(3)]
    return dict(sorted(seconds.items(), key=lambda item: -item[1])[:6])


def phase_ours(args: argparse.Namespace) -> dict[str, Any]:
    from lakehouse_ml.capabilities import portable
    from lakehouse_ml.features.lookup import FeatureLookup, build_training_set

    engine, spark = start_engine()

    def training_set():
        spine = spark.read.format("delta").load(args.spine_path)
        lookup = FeatureLookup(
            source=args.features_path,
            feature_names=list(FEATURES),
            lookup_key="entity_id",
            timestamp_key="feature_ts",
            lookback_window=LOOKBACK,
            ingested_at_key="ingested_at",
            filter_by_ingested_at=args.mode == "filtered",
            name="feat",
        )
        return spine, build_training_set(spine, [lookup], "entity_id", "ts")

    def timed(action) -> float:
        started = time.perf_counter()
        action()
        return time.perf_counter() - started

    try:
        # portable(): a cluster's strings may carry a collation delta-rs cannot read.
        runs = [
            timed(lambda: portable(training_set()[1]).write.format("delta").mode("overwrite").save(args.out))
            for _ in range(args.repeat)
        ]
        report: dict[str, Any] = {"seconds": runs[-1], "cold": runs[0], "all_seconds": runs}
        if args.profile:
            report["stages"] = operator_seconds(spark, training_set()[1])
        return {**report, "peak_mb": peak_rss_mb()}
    finally:
        engine.stop()


DUCKDB_ASOF = """
CREATE TEMP TABLE f AS
SELECT entity_id, feature_ts,
       arg_max(struct_pack(f_amount := f_amount, f_count := f_count, f_cat := f_cat),
               coalesce(epoch_us(ingested_at), -9223372036854775807)) AS v
FROM features WHERE entity_id IS NOT NULL AND feature_ts IS NOT NULL
GROUP BY entity_id, feature_ts
"""
DUCKDB_FILTERED = """
CREATE TEMP TABLE f AS
WITH available AS (
    SELECT entity_id, greatest(feature_ts, ingested_at) AS feature_ts,
           arg_max(struct_pack(fts := feature_ts, ing := ingested_at, f_amount := f_amount,
                               f_count := f_count, f_cat := f_cat),
                   epoch_us(feature_ts)::HUGEINT * 18446744073709551616 + epoch_us(ingested_at)) AS v
    FROM features
    WHERE entity_id IS NOT NULL AND feature_ts IS NOT NULL AND ingested_at IS NOT NULL
    GROUP BY entity_id, greatest(feature_ts, ingested_at)
)
SELECT entity_id, feature_ts,  -- feature_ts here: when the best row so far became available
       arg_max(v, epoch_us(v.fts)::HUGEINT * 18446744073709551616 + epoch_us(v.ing)) OVER (
           PARTITION BY entity_id ORDER BY feature_ts ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
       ) AS v
FROM available
"""
DUCKDB_JOIN = """
WITH s AS (SELECT *, row_number() OVER () AS rid FROM spine)
SELECT s.* EXCLUDE (rid), {features}
FROM s ASOF LEFT JOIN f ON s.entity_id = f.entity_id AND s.ts >= f.feature_ts
ORDER BY s.rid
"""


def phase_duckdb(args: argparse.Namespace) -> dict[str, Any]:
    import duckdb
    from deltalake import write_deltalake

    chosen_ts = "f.v.fts" if args.mode == "filtered" else "f.feature_ts"
    features = ", ".join(
        f"CASE WHEN {chosen_ts} >= s.ts - INTERVAL {LOOKBACK} THEN f.v.{name} END AS feat__{name}" for name in FEATURES
    )
    timings = []
    for _ in range(args.repeat):
        shutil.rmtree(args.out, ignore_errors=True)
        started = time.perf_counter()
        spine, feature_table = read_delta(args.spine_path), read_delta(args.features_path)
        loaded = time.perf_counter()
        con = duckdb.connect()
        # The 16 GB budget ours is measured against at 1e7 x 1e8 (beyond it DuckDB spills to disk);
        # the Arrow inputs from delta-rs are outside DuckDB's accounting and count in the peak RSS.
        con.execute(f"SET memory_limit = '{DUCKDB_MEMORY}'")
        con.register("spine", spine)
        con.register("features", feature_table)
        con.execute(DUCKDB_FILTERED if args.mode == "filtered" else DUCKDB_ASOF)
        prepared = time.perf_counter()
        table = con.sql(DUCKDB_JOIN.format(features=features)).to_arrow_table()
        joined = time.perf_counter()
        write_deltalake(args.out, table, mode="overwrite")
        ended = time.perf_counter()
        con.close()
        timings.append(
            {
                "seconds": ended - started,
                "load": loaded - started,
                "prepare": prepared - loaded,
                "asof_join": joined - prepared,
                "write": ended - joined,
            }
        )
    return {
        **timings[-1],
        "cold": timings[0]["seconds"],
        "all_seconds": [t["seconds"] for t in timings],
        "peak_mb": peak_rss_mb(),
    }


def _plain_strings(table):
    """delta-rs returns string_view columns, which pyarrow cannot sort or take yet."""
    import pyarrow as pa

    schema = pa.schema(
        [pa.field(f.name, pa.string() if pa.types.is_string_view(f.type) else f.type) for f in table.schema]
    )
    return table.cast(schema)


def phase_compare(args: argparse.Namespace) -> dict[str, Any]:
    import pyarrow.compute as pc

    ours = _plain_strings(read_delta(args.spine_path)).sort_by("spine_id")  # --spine-path: our result
    theirs = _plain_strings(read_delta(args.features_path)).sort_by("spine_id")  # --features-path: DuckDB's
    report: dict[str, Any] = {"rows": [ours.num_rows, theirs.num_rows], "columns": ours.column_names}
    if ours.column_names != theirs.column_names or ours.num_rows != theirs.num_rows:
        report.update(identical=False, reason=f"shape: {ours.column_names} vs {theirs.column_names}")
        return report
    differing: dict[str, int] = {}
    for name in ours.column_names:
        mine, other = ours[name], theirs[name]
        if mine.type != other.type:
            other = other.cast(mine.type)
        if not mine.equals(other):
            same = pc.fill_null(pc.equal(mine, other), False)
            both_null = pc.and_(pc.is_null(mine), pc.is_null(other))
            differing[name] = int(pc.sum(pc.invert(pc.or_(same, both_null))).as_py() or 0)
    report.update(
        identical=not differing,
        differing_rows=differing,
        non_null_features=int(sum(ours[f"feat__{n}"].length() - ours[f"feat__{n}"].null_count for n in FEATURES)),
    )
    return report


PHASES = {"generate": phase_generate, "ours": phase_ours, "duckdb": phase_duckdb, "compare": phase_compare}


# ================================================================ driver


def run_phase(phase: str, args: argparse.Namespace, **options: Any) -> dict[str, Any]:
    """Run one phase in a child process and return what it reports."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        result_path = handle.name
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--phase",
        phase,
        "--result",
        result_path,
        "--repeat",
        str(args.repeat),
    ]
    for key, value in options.items():
        flag = f"--{key.replace('_', '-')}"
        if isinstance(value, bool):
            command += [flag] if value else []
        else:
            command += [flag, str(value)]
    env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
    completed = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    try:
        if completed.returncode != 0:
            raise RuntimeError(
                f"phase {phase} failed ({completed.returncode}):\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
            )
        return json.loads(Path(result_path).read_text())
    finally:
        Path(result_path).unlink(missing_ok=True)


def ensure_table(args: argparse.Namespace, kind: str, rows: int, entities: int) -> str:
    """Generate a table once per (kind, rows, entities); reuse it on later runs."""
    path = Path(args.workdir) / f"{kind}_{rows}_e{entities}"
    done = path / MARKER
    if args.fresh or not done.exists():
        shutil.rmtree(path, ignore_errors=True)
        report = run_phase("generate", args, kind=kind, rows=rows, entities=entities, out=path)
        done.write_text(json.dumps(report))
        print(
            f"  generated {kind} {rows_label(rows)} rows ({entities:,} entities) in {report['seconds']:.1f} s",
            flush=True,
        )
    return str(path)


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run of one engine (by warm seconds), its cold median and largest peak RSS."""
    failed = [run["failed"] for run in runs if "failed" in run]
    if failed:
        return {"failed": failed[0]}
    ordered = sorted(runs, key=lambda run: run["seconds"])
    median = ordered[len(ordered) // 2]
    colds = sorted(run["cold"] for run in runs)
    return {
        **median,
        "cold": colds[len(colds) // 2],
        "peak_mb": max(run["peak_mb"] for run in runs),
        "runs": [run["seconds"] for run in runs],
    }


def _listed(seconds: list[float]) -> str:
    return "/".join(f"{value:.2f}" for value in seconds)


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spine", default="1e5,1e6", help="spine sizes, comma-separated (default 1e5,1e6)")
    parser.add_argument("--features", default="1e6,1e7", help="feature table sizes (default 1e6,1e7)")
    parser.add_argument("--modes", default=",".join(MODES), help="asof and/or filtered (default both)")
    parser.add_argument(
        "--runs",
        type=int,
        default=3,
        help="fresh processes per engine and case, interleaved (default 3): figures are their medians",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="measurements per process (default 2): the first is 'cold', the last 'warm'",
    )
    parser.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "bench_point_in_time"))
    parser.add_argument("--fresh", action="store_true", help="regenerate the input tables")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--entities", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--spine-path", help=argparse.SUPPRESS)
    parser.add_argument("--features-path", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.phase:
        report = PHASES[args.phase](args)
        Path(args.result).write_text(json.dumps(report, default=str))
        return 0

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown modes {unknown}; choose from {MODES}")
    workdir = Path(args.workdir)
    if workdir.exists() and any(workdir.iterdir()) and not (workdir / MARKER).exists():
        parser.error(f"{workdir} is not empty and was not made by this benchmark; pick another --workdir")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).touch()

    import duckdb
    import pysail

    print(
        f"point-in-time benchmark: {os.cpu_count()} CPUs, pysail {pysail.__version__}, duckdb {duckdb.__version__}, "
        f"workdir {workdir}, load average {load_average()}",
        flush=True,
    )
    results = []
    for feature_rows in parse_sizes(args.features):
        entities = entities_for(feature_rows)
        features_path = ensure_table(args, "features", feature_rows, entities)
        for spine_rows in parse_sizes(args.spine):
            spine_path = ensure_table(args, "spine", spine_rows, entities)
            for mode in modes:
                tag = f"spine {rows_label(spine_rows)} × features {rows_label(feature_rows)}, {mode}"
                paths = {"spine_path": spine_path, "features_path": features_path, "mode": mode}
                ours_out, duck_out = workdir / "out_ours", workdir / "out_duckdb"
                ours_runs, duck_runs = [], []
                for run in range(args.runs):
                    # Interleaved, so a noisy spell of the machine hits both engines alike; the
                    # last run of ours also times its stages.
                    ours_runs.append(run_phase("ours", args, out=ours_out, profile=run == args.runs - 1, **paths))
                    try:
                        duck_runs.append(run_phase("duckdb", args, out=duck_out, **paths))
                    except RuntimeError as error:  # e.g. out of memory at 1e8 rows: printed beside ours
                        duck_runs.append({"failed": " ".join(str(error).split())[-300:]})
                ours, duck = summarise(ours_runs), summarise(duck_runs)
                ours["stages"] = ours_runs[-1].get("stages", {})
                failed = duck.get("failed")
                same = (
                    run_phase("compare", args, spine_path=ours_out, features_path=duck_out)
                    if not failed
                    else {"identical": None, "non_null_features": "-"}
                )
                row = {
                    "spine": spine_rows,
                    "features": feature_rows,
                    "mode": mode,
                    "ours": ours,
                    "duckdb": duck,
                    "compare": same,
                    "ratio": None if failed else ours["seconds"] / duck["seconds"],
                    "ratio_cold": None if failed else ours["cold"] / duck["cold"],
                }
                results.append(row)
                verdict = (
                    "not compared (DuckDB failed)"
                    if failed
                    else "IDENTICAL"
                    if same["identical"]
                    else f"DIFFERENT {same.get('differing_rows') or same.get('reason')}"
                )
                stages = ", ".join(f"{name} {value:.2f} s" for name, value in ours["stages"].items())
                duck_text = (
                    f"FAILED: {failed}"
                    if failed
                    else f"{duck['seconds']:.2f} s (cold {duck['cold']:.2f} s, {duck['peak_mb']:.0f} MB peak), "
                    f"ratio {row['ratio']:.2f} (cold {row['ratio_cold']:.2f})"
                )
                print(
                    f"  {tag}: ours {ours['seconds']:.2f} s (cold {ours['cold']:.2f} s, {ours['peak_mb']:.0f} MB "
                    f"peak; runs {_listed(ours['runs'])}), duckdb {duck_text}, {verdict} "
                    f"({same['non_null_features']} non-null feature values)\n"
                    f"      ours, where the time goes (last run, compute seconds per operator, summed over threads): {stages}\n"
                    + (
                        ""
                        if failed
                        else f"      duckdb (median run): load {duck['load']:.2f} s, prepare {duck['prepare']:.2f} s, "
                        f"asof join {duck['asof_join']:.2f} s, write {duck['write']:.2f} s; runs {_listed(duck['runs'])}"
                    ),
                    flush=True,
                )

    print(f"\nload average at the end {load_average()}")
    print(
        f"seconds: median over {args.runs} interleaved processes of each one's last of {args.repeat} measurements "
        "(cold: median of their first); ratio = ours / duckdb; MB: the largest peak RSS of the processes"
    )
    header = (
        f"{'spine':>6} {'features':>8} {'mode':>8} {'ours s':>7} {'duckdb s':>8} {'ratio':>6} "
        f"{'cold ours':>9} {'cold duck':>9} {'ratio':>6} {'ours MB':>8} {'duckdb MB':>9}  result"
    )
    print(header)
    print("-" * len(header))
    for row in results:
        ours, duck = row["ours"], row["duckdb"]
        if "failed" in duck:
            theirs = (
                f"{'failed':>8} {'-':>6} {ours['cold']:9.2f} {'failed':>9} {'-':>6} {ours['peak_mb']:8.0f} {'-':>9}"
            )
            verdict = "not compared"
        else:
            theirs = (
                f"{duck['seconds']:8.2f} {row['ratio']:6.2f} {ours['cold']:9.2f} {duck['cold']:9.2f} "
                f"{row['ratio_cold']:6.2f} {ours['peak_mb']:8.0f} {duck['peak_mb']:9.0f}"
            )
            verdict = "IDENTICAL" if row["compare"]["identical"] else "DIFFERENT"
        print(
            f"{rows_label(row['spine']):>6} {rows_label(row['features']):>8} {row['mode']:>8} "
            f"{ours['seconds']:7.2f} {theirs}  {verdict}"
        )
    (workdir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    return 0 if all(row["compare"]["identical"] is not False for row in results) else 1


if __name__ == "__main__":
    sys.exit(main())
