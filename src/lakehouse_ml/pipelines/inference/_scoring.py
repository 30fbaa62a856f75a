"""The scoring kernel run inside Spark by ``mapInArrow``: a loaded model scores Arrow batches.

The function returned by :func:`scoring_function` closes over the loaded scikit-learn pipeline,
so Spark ships the model with the function (pickled once per task) and every executor scores
its own batches; nothing is collected to the driver. A batch's columns pass through untouched
(no pandas round trip) and a ``probability`` column is appended: P(positive class) from
``predict_proba`` on the model's raw input columns, converted to pandas exactly as training read
them (Arrow → pandas), and null on rows flagged as rejected, which are never given to the model.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa


def score_batch(batch: pa.RecordBatch, model: Any, inputs: list[str], rejected: str, output: str) -> pa.RecordBatch:
    """``batch`` with ``output``: the model's positive-class probability, null where ``rejected``."""
    skip = np.asarray(batch.column(rejected).fill_null(True).to_numpy(zero_copy_only=False), dtype=bool)
    keep = ~skip
    probability = np.zeros(batch.num_rows, dtype=np.float64)
    if keep.any():
        rows = batch.select(inputs).to_pandas()
        probability[keep] = model.predict_proba(rows[keep].reset_index(drop=True))[:, 1]
    return batch.append_column(pa.field(output, pa.float64()), pa.array(probability, mask=skip))


def scoring_function(model: Any, inputs: list[str], rejected: str, output: str) -> Any:
    """A ``mapInArrow`` function scoring every batch with ``model`` (held in its closure)."""

    def score_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            yield score_batch(batch, model, inputs, rejected, output)

    return score_partition
