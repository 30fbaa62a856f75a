#!/usr/bin/env python
"""Benchmark the batch ``inference`` pipeline: rows/s at the default scale and 10x, against the floor.

    python tests/benchmarks/bench_batch_inference.py [--scales 1,10] [--repeats 3] [--source DIR]
        [--model DIR] [--threshold T] [--workdir DIR] [--keep]

Reads the default lakehouse (``--source``, default ``data/lakehouse/dev``; run ``kedro run`` first)
read-only: every run happens in a run directory under ``--workdir`` (default a new
``/tmp/bench_batch_inference_*``), which is the cwd of the pipeline, so the predictions, the
rejections and the work table land there. Per scale:

1. **Inputs.** Scale 1: ``silver/orders`` and the two feature tables are symlinks to the source
   tables (never written). Scale k > 1: the same tables with every customer replicated k times
   (copy r > 0 gets ``customer_id + "~r"``; ``event_id`` likewise), written once by Spark into the
   run directory (timed, not part of the comparison). Replicas have the same features, so the
   model does the same kind of work per row; re-simulating ``simulate.scale=10`` and re-running
   ingest + features would take far longer and changes nothing the scoring step sees.
2. **Model.** The project's candidate (``data/06_models/dev/candidate.json``, its model artifact
   under ``mlartifacts/``; or ``--model DIR``) is logged into a temporary SQLite MLflow store
   (``<workdir>/mlflow.db``), registered as ``dev.ml.churn_classifier`` and given the ``champion``
   alias and its ``operating_threshold`` tag, as the registration and promotion pipelines would.
3. **PIPELINE.** The project's ``inference`` pipeline through the real catalog and parameters
   (``tests.helpers.run_pipeline``-style, SequentialRunner, embedded Sail engine started before the
   clock), ``--repeats`` times; every repeat replaces the same (scoring date, model version), so
   the tables do not grow. Timed: the whole run (champion resolution and model load, spine, lookups,
   contract checks, scoring, the three writes, the read-back check). Per-node spans come from
   Kedro dataset/node hooks (first load to last save of a node: a node's save is where its lazy
   Spark plan runs).
4. **SPARK SCORING.** Only the ``mapInArrow`` scoring of the materialised work table's rows
   (read Delta, score, aggregate), to separate the engine's UDF path from the rest.
5. **FLOOR.** The same loaded model's ``predict_proba`` called directly on the same scored rows as
   one pandas frame (read from the work table with delta-rs, outside the clock), best of
   ``--repeats``. The script checks the pipeline's probabilities equal the floor's (max abs diff).

rows/s are scored rows (predictions produced) per second; the ratio is floor rows/s ÷ pipeline
rows/s (how many times faster the bare model call is than the governed batch job).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]
for entry in (PROJECT_ROOT, PROJECT_ROOT / "src"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from kedro.framework.hooks.markers import hook_impl  # noqa: E402 - after the sys.path set-up above

MODEL_NAME = "dev.ml.churn_classifier"
LAKE = Path("data/lakehouse/dev")
TABLES = {
    "orders": "silver/orders",
    "customer_activity": "features/customer_activity",
    "customer_profile": "features/customer_profile",
}


# ---------------------------------------------------------------- set-up


def _candidate_model(model_dir: str | None) -> tuple[Path, float]:
    """The candidate's logged model folder (found by run id under mlartifacts/) and its threshold."""
    pointer = json.loads((PROJECT_ROOT / "data/06_models/dev/candidate.json").read_text())
    threshold = float(pointer["operating_threshold"]["threshold"])
    if model_dir:
        return Path(model_dir), threshold
    for mlmodel in sorted((PROJECT_ROOT / "mlartifacts").glob("models/*/artifacts/MLmodel")):
        if f"run_id: {pointer['run_id']}" in mlmodel.read_text():
            return mlmodel.parent, threshold
    raise SystemExit(f"no logged model of candidate run {pointer['run_id']} under mlartifacts/: pass --model DIR")


def register_champion(model_dir: Path, threshold: float, artifacts: Path) -> str:
    """Log the model into the (temporary) store, its artifacts under ``artifacts``, register it and
    make it champion."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import Model

    model = mlflow.sklearn.load_model(str(model_dir))
    if mlflow.get_experiment_by_name("bench_batch_inference") is None:
        # Not the default location, ./mlruns of the cwd: the project.
        mlflow.create_experiment("bench_batch_inference", artifact_location=artifacts.as_uri())
    mlflow.set_experiment("bench_batch_inference")
    with mlflow.start_run() as run:
        mlflow.sklearn.log_model(
            model,
            name="model",
            signature=Model.load(str(model_dir)).signature,
            pyfunc_predict_fn="predict_proba",
            serialization_format="cloudpickle",
        )
    client = MlflowClient()
    version = mlflow.register_model(f"runs:/{run.info.run_id}/model", MODEL_NAME).version
    client.set_model_version_tag(MODEL_NAME, version, "run_id", run.info.run_id)
    client.set_model_version_tag(MODEL_NAME, version, "operating_threshold", str(threshold))
    client.set_registered_model_alias(MODEL_NAME, "champion", version)
    return str(version)


def prepare_inputs(run_dir: Path, source: Path, scale: int, spark: Any) -> dict[str, Any]:
    """Symlinks to the source tables (scale 1) or replicated copies written by Spark (scale > 1)."""
    from pyspark.sql import functions as F

    started, rows = time.perf_counter(), {}
    for name, table in TABLES.items():
        target = run_dir / LAKE / table
        target.parent.mkdir(parents=True, exist_ok=True)
        if scale == 1:
            target.symlink_to((source / table).resolve(), target_is_directory=True)
            continue
        frame = spark.read.format("delta").load(str((source / table).resolve()))
        copy = F.col("_copy")
        suffixed = {
            c: F.when(copy == 0, F.col(c)).otherwise(F.concat(F.col(c), F.lit("~"), copy.cast("string")))
            for c in ("customer_id", "event_id")
            if c in frame.columns
        }
        replicated = (
            frame.crossJoin(spark.range(scale).withColumnRenamed("id", "_copy")).withColumns(suffixed).drop("_copy")
        )
        replicated.write.format("delta").mode("overwrite").save(str(target.resolve()))
        rows[name] = spark.read.format("delta").load(str(target.resolve())).count()
    return {"seconds": time.perf_counter() - started, "rows": rows}


# ---------------------------------------------------------------- measurements


class NodeSpans:
    """Kedro hooks: wall time from a node's first input load to its last output save."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}

    def _mark(self, node: Any) -> None:
        now = time.perf_counter()
        self.first.setdefault(node.name, now)
        self.last[node.name] = now

    @hook_impl
    def before_dataset_loaded(self, dataset_name: str, node: Any) -> None:
        self._mark(node)

    @hook_impl
    def before_node_run(self, node: Any, catalog: Any, inputs: Any, is_async: bool, run_id: str) -> None:
        self._mark(node)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node: Any) -> None:
        self._mark(node)

    @hook_impl
    def after_node_run(self, node: Any, catalog: Any, inputs: Any, outputs: Any, is_async: bool, run_id: str) -> None:
        self._mark(node)

    def spans(self) -> dict[str, float]:
        return {name: self.last[name] - self.first[name] for name in self.first}


def run_inference() -> tuple[float, dict[str, float]]:
    """One run of the inference pipeline on the real catalog and parameters (cwd = run dir)."""
    import mlflow
    from kedro.framework.hooks import _create_hook_manager
    from kedro.io import DataCatalog
    from kedro.runner import SequentialRunner

    from lakehouse_ml.pipelines.inference.pipeline import create_pipeline
    from tests.helpers import _flatten_params, project_config

    config = project_config("local")
    catalog = DataCatalog.from_config(config["catalog"])
    for name, value in _flatten_params(config["parameters"]).items():
        catalog[name] = value
    spans = NodeSpans()
    manager = _create_hook_manager()
    manager.register(spans)
    started = time.perf_counter()
    try:
        SequentialRunner().run(create_pipeline(), catalog, hook_manager=manager)
    finally:
        while mlflow.active_run():
            mlflow.end_run()
    return time.perf_counter() - started, spans.spans()


def spark_scoring_seconds(spark: Any, champion: dict[str, Any]) -> float:
    """Read the work table's rows and score them with the pipeline's mapInArrow function only."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from lakehouse_ml.pipelines.inference._scoring import scoring_function

    rows = spark.read.format("delta").load(str((LAKE / "_work/inference_scored_rows").resolve()))
    inputs = champion["input_columns"]
    frame = rows.select("customer_id", *inputs, "_rejected")
    schema = T.StructType([*frame.schema.fields, T.StructField("p", T.DoubleType(), True)])
    started = time.perf_counter()
    frame.mapInArrow(scoring_function(champion["model"], inputs, "_rejected", "p"), schema).agg(F.sum("p")).collect()
    return time.perf_counter() - started


def floor_seconds(champion: dict[str, Any], repeats: int) -> tuple[float, int, float]:
    """Best time of ``predict_proba`` on the scored rows as one pandas frame; rows; max diff vs the pipeline."""
    import numpy as np

    from lakehouse_ml.datasets import PandasDeltaDataset

    rows = PandasDeltaDataset(filepath=str(LAKE / "_work/inference_scored_rows")).load()
    rows = rows[~rows["_rejected"]].reset_index(drop=True)
    frame = rows[champion["input_columns"]]
    times, scores = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        scores = champion["model"].predict_proba(frame)[:, 1]
        times.append(time.perf_counter() - started)
    return min(times), len(frame), float(np.max(np.abs(scores - rows["probability"].to_numpy()))) if len(frame) else 0.0


# ---------------------------------------------------------------- main


def _rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:,.0f}" if seconds > 0 else "-"


def measure_scale(scale: int, run_dir: Path, args: argparse.Namespace, spark: Any) -> dict[str, Any]:
    from lakehouse_ml.datasets import PandasDeltaDataset, RegisteredModelAliasDataset

    os.chdir(run_dir)
    prepared = prepare_inputs(run_dir, Path(args.source), scale, spark)
    if prepared["rows"]:
        print(
            f"  replicated x{scale} in {prepared['seconds']:.1f} s: "
            + ", ".join(f"{k} {v:,}" for k, v in prepared["rows"].items())
        )
    walls, node_spans = [], defaultdict(list)
    for repeat in range(args.repeats):
        wall, spans = run_inference()
        walls.append(wall)
        for name, seconds in spans.items():
            node_spans[name].append(seconds)
        print(f"  pipeline run {repeat + 1}: {wall:.2f} s")
    predictions = PandasDeltaDataset(filepath=str(LAKE / "ml/churn_predictions")).load()
    rows = PandasDeltaDataset(filepath=str(LAKE / "_work/inference_scored_rows"), columns=["_rejected"]).load()
    started = time.perf_counter()
    champion = RegisteredModelAliasDataset(
        model_name=MODEL_NAME, alias="champion", flavor="sklearn", require_threshold=True
    ).load()
    load_s = time.perf_counter() - started
    spark_s = min(spark_scoring_seconds(spark, champion) for _ in range(args.repeats))
    floor_s, floor_rows, max_diff = floor_seconds(champion, args.repeats)
    scored = len(predictions)
    assert scored == floor_rows, (scored, floor_rows)  # one scoring date and version: replaced, not appended
    return {
        "scale": scale,
        "spine_rows": len(rows),
        "scored": scored,
        "rejected": int(rows["_rejected"].sum()),
        "pipeline_s": walls,
        "pipeline_median_s": statistics.median(walls),
        "pipeline_best_s": min(walls),
        "node_median_s": {name: statistics.median(v) for name, v in node_spans.items()},
        "champion_load_s": load_s,
        "spark_scoring_s": spark_s,
        "floor_s": floor_s,
        "max_abs_diff": max_diff,
        "load_avg": os.getloadavg()[0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scales", default="1,10", help="comma-separated customer multipliers (integers; default 1,10)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="pipeline runs (and floor calls) per scale (default 3)")
    parser.add_argument(
        "--source", default=str(PROJECT_ROOT / LAKE), help="the lakehouse catalog folder to read (read-only)"
    )
    parser.add_argument(
        "--model", default=None, help="a logged MLflow sklearn model folder (default: the project's candidate)"
    )
    parser.add_argument("--threshold", type=float, default=None, help="operating threshold (default: the candidate's)")
    parser.add_argument(
        "--workdir", default=None, help="where run directories go (default: a new /tmp/bench_batch_inference_*)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    args = parser.parse_args(argv)
    scales = [int(s) for s in args.scales.split(",") if s.strip()]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_batch_inference_", dir="/tmp")).resolve()
    if PROJECT_ROOT in workdir.parents or workdir == PROJECT_ROOT:
        raise SystemExit(f"--workdir must be outside the project ({PROJECT_ROOT})")
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir / 'mlflow.db'}"
    os.environ["LAKEHOUSE_ML_ROOT"] = str(workdir)
    from lakehouse_ml.engine import ENGINE, EngineConfig
    from tests.helpers import project_config

    project_config("local")  # Kedro configures logging on first use; then keep only warnings
    for name in ("kedro", "lakehouse_ml", "py4j", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)

    model_dir, threshold = _candidate_model(args.model)
    version = register_champion(
        model_dir, args.threshold if args.threshold is not None else threshold, workdir / "artifacts"
    )
    print(
        f"bench_batch_inference: scales {scales}, {args.repeats} repeats; work dir {workdir}; champion = {MODEL_NAME} v{version} ({model_dir})"
    )
    spark = ENGINE.start(EngineConfig(spark_conf={"spark.sql.session.timeZone": "UTC"}))
    results, cwd = [], Path.cwd()
    try:
        for scale in scales:
            run_dir = workdir / f"scale_{scale}"
            shutil.rmtree(run_dir, ignore_errors=True)
            run_dir.mkdir(parents=True)
            print(f"\n=== scale {scale}  ({run_dir})")
            result = measure_scale(scale, run_dir, args, spark)
            os.chdir(cwd)
            results.append(result)
            print("  node spans (median s): " + ", ".join(f"{k} {v:.2f}" for k, v in result["node_median_s"].items()))
            print(
                f"  champion resolution + model load {result['champion_load_s']:.2f} s; load average {result['load_avg']:.2f}"
            )
    finally:
        os.chdir(cwd)
        ENGINE.stop()
    print(
        "\nscale | spine rows | scored | rejected | pipeline s (median / best) | pipeline rows/s | Spark scoring s | floor s | floor rows/s | floor ÷ pipeline | max |diff|"
    )
    for r in results:
        print(
            f"{r['scale']} | {r['spine_rows']:,} | {r['scored']:,} | {r['rejected']:,} | {r['pipeline_median_s']:.2f} / {r['pipeline_best_s']:.2f} | "
            f"{_rate(r['scored'], r['pipeline_median_s'])} | {r['spark_scoring_s']:.2f} | {r['floor_s']:.3f} | {_rate(r['scored'], r['floor_s'])} | "
            f"{r['pipeline_median_s'] / r['floor_s']:.1f}x | {r['max_abs_diff']:.1e}"
        )
    (workdir / "results.json").write_text(json.dumps(results, indent=2))
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
