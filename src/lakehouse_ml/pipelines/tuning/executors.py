"""Where tuning trials are fitted: local threads, or Spark tasks on the cluster's executors.

On the Spark path each batch of drawn configurations becomes a DataFrame of one row per partition,
fitted in ``mapInPandas``: one task per trial, every fold of it, on whichever executor Spark picks.
The driver keeps the study (drawing, pruning, telling) and the MLflow runs: the tasks only return
fold scores, which the driver replays through the same pruner, so the same seed and ``n_jobs``
give the same trials on either path (``nodes._optimize_in_batches``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd
from pyspark.sql import SparkSession

from lakehouse_ml.capabilities import python_runs_on_executors
from lakehouse_ml.engine import get_spark
from lakehouse_ml.pipelines.tuning.nodes import BatchFitter, Fold, fold_scores

logger = logging.getLogger(__name__)

EXECUTORS = ("auto", "threads", "spark")
RESULT_SCHEMA = "slot int, scores array<double>, error string, duration_s double"


def batch_fitter(
    executor: str, train: pd.DataFrame, folds: list[Fold], columns: dict[str, Any], seed: int
) -> BatchFitter | None:
    """The Spark batch fitter ``tuning.executor`` asks for, or ``None`` for local threads."""
    if executor not in EXECUTORS:
        raise ValueError(f"tuning.executor: expected one of {', '.join(EXECUTORS)}, got {executor!r}")
    if executor == "threads":
        return None
    spark = get_spark()
    if executor == "auto" and not python_runs_on_executors(spark):
        return None
    logger.info("tuning: trials are fitted as Spark tasks, one per trial")
    return spark_batch_fitter(spark, train, folds, columns, seed)


def _failed_after(scores: list[float], error: str) -> Iterator[float]:
    """The scores a task computed, then the ValueError that ended its fit."""
    yield from scores
    raise ValueError(error)


def spark_batch_fitter(
    spark: SparkSession, train: pd.DataFrame, folds: list[Fold], columns: dict[str, Any], seed: int
) -> BatchFitter:
    """Fit each batch as Spark tasks: one partition, one task, one trial."""

    def fit_batch(configs: list[tuple[str, dict[str, Any]]]) -> list[tuple[Any, float]]:
        def fit(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
            from pyspark import TaskContext
            from threadpoolctl import threadpool_limits

            context = TaskContext.get()
            cpus = context.cpus() if context is not None else 1
            for frame in frames:
                for slot in frame["id"].tolist():
                    family, params = configs[slot]
                    started, scores, error = time.monotonic(), [], None
                    # OpenMP (histogram gradient boosting) would take every core of the machine.
                    with threadpool_limits(limits=max(1, cpus), user_api="openmp"):
                        try:
                            for score in fold_scores(train, folds, columns, family, params, seed):
                                scores.append(score)
                        except ValueError as failure:
                            error = str(failure)
                    yield pd.DataFrame(
                        {
                            "slot": [slot],
                            "scores": [scores],
                            "error": [error],
                            "duration_s": [time.monotonic() - started],
                        }
                    )

        rows = spark.range(0, len(configs), 1, len(configs)).mapInPandas(fit, RESULT_SCHEMA).collect()
        by_slot = {row["slot"]: row for row in rows}
        fitted = []
        for slot in range(len(configs)):
            row = by_slot[slot]
            scores = list(row["scores"] or [])
            failed = row["error"] is not None
            fitted.append((_failed_after(scores, row["error"]) if failed else scores, row["duration_s"]))
        return fitted

    return fit_batch
