"""A numpy-only scoring path for the project's model pipeline, for small online requests.

The pipeline ``build_model_pipeline`` makes (a ColumnTransformer of imputers per fill value and
an imputed one-hot encoder, optional scaling, a classifier) spends ~6 ms of a single-row
``predict_proba`` on scikit-learn's per-step input validation and pandas indexing, against ~1 ms
for the classifier itself. :func:`compile_pipeline` reads the fitted parameters (fill values,
categories, scaling) once and applies them with numpy; the classifier is the fitted one. It
accepts only the structure it knows, and checks itself against the pipeline on rows that
exercise every fill value, category, unseen category and null: anything else, or any difference,
gives ``None`` and the caller keeps the pipeline.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

logger = logging.getLogger(__name__)

_TOLERANCE = 1e-12


@dataclass(frozen=True)
class _Numeric:
    columns: list[str]
    fill: np.ndarray


@dataclass(frozen=True)
class _OneHot:
    columns: list[str]
    missing: str
    categories: list[dict[str, int]]
    width: int


@dataclass(frozen=True)
class CompiledPipeline:
    """The fitted pipeline's preprocessing as numpy operations, then its classifier."""

    parts: tuple[_Numeric | _OneHot, ...]
    scale: tuple[np.ndarray, np.ndarray] | None
    classifier: Any

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """The classifier's input matrix for ``frame`` (the pipeline's preprocessing)."""
        blocks = []
        for part in self.parts:
            if isinstance(part, _Numeric):
                # Column by column: selecting the columns as a frame first costs more than the model's input needs.
                values = np.column_stack([frame[c].to_numpy(dtype=float, na_value=np.nan) for c in part.columns])
                missing = np.isnan(values)
                blocks.append(np.where(missing, part.fill, values))
            else:
                blocks.append(_one_hot(frame, part))
        matrix = np.hstack(blocks) if len(blocks) > 1 else blocks[0]
        if self.scale is not None:
            mean, scale = self.scale
            matrix = (matrix - mean) / scale
        return matrix

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Class probabilities, as the pipeline's ``predict_proba``."""
        return self.classifier.predict_proba(self.transform(frame))


def _one_hot(frame: pd.DataFrame, part: _OneHot) -> np.ndarray:
    encoded = np.zeros((len(frame), part.width))
    offset = 0
    for column, categories in zip(part.columns, part.categories):
        for row, value in enumerate(frame[column].tolist()):
            key = (
                part.missing
                if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA
                else str(value)
            )
            position = categories.get(key)
            if position is not None:  # an unseen category is all zeros (handle_unknown="ignore")
                encoded[row, offset + position] = 1.0
        offset += len(categories)
    return encoded


def _part(transformer: Any, columns: list[str]) -> _Numeric | _OneHot | None:
    """One ColumnTransformer branch as numpy parameters, or None when its shape is not the project's."""
    steps = [step for _, step in transformer.steps] if isinstance(transformer, Pipeline) else [transformer]
    imputers = [s for s in steps if isinstance(s, SimpleImputer)]
    encoders = [s for s in steps if isinstance(s, OneHotEncoder)]
    if len(imputers) != 1 or imputers[0].add_indicator:
        return None
    imputer = imputers[0]
    if not encoders and imputer.strategy in ("constant", "median", "mean"):
        fill = np.asarray(imputer.statistics_, dtype=float)
        return _Numeric(list(columns), fill) if fill.shape == (len(columns),) else None
    if len(encoders) == 1 and imputer.strategy == "constant" and encoders[0].drop is None:
        encoder = encoders[0]
        if (
            encoder.handle_unknown != "ignore"
            or getattr(encoder, "min_frequency", None)
            or getattr(encoder, "max_categories", None)
        ):
            return None
        categories = [{str(c): i for i, c in enumerate(values)} for values in encoder.categories_]
        return _OneHot(list(columns), str(imputer.fill_value), categories, sum(len(c) for c in categories))
    return None


def _structure(pipeline: Any) -> CompiledPipeline | None:
    if not isinstance(pipeline, Pipeline) or "preprocess" not in pipeline.named_steps:
        return None
    steps = list(pipeline.named_steps.items())
    preprocess, classifier = steps[0][1], steps[-1][1]
    middle = [step for _, step in steps[1:-1]]
    if steps[0][0] != "preprocess" or any(not isinstance(step, StandardScaler) for step in middle) or len(middle) > 1:
        return None
    parts = []
    for name, transformer, columns in preprocess.transformers_:
        if name == "remainder" or transformer == "drop":
            continue
        part = _part(transformer, columns)
        if part is None:
            return None
        parts.append(part)
    scale = None
    if middle:
        scaler = middle[0]
        scale = (
            scaler.mean_ if scaler.with_mean else np.zeros_like(scaler.scale_),
            scaler.scale_ if scaler.with_std else np.ones_like(scaler.mean_),
        )
    return CompiledPipeline(tuple(parts), scale, classifier) if parts else None


def check_rows(compiled: CompiledPipeline, input_columns: list[str]) -> pd.DataFrame:
    """Rows exercising every fill value, category, unseen category and null of the compiled parts."""
    numeric = {
        c: fill for part in compiled.parts if isinstance(part, _Numeric) for c, fill in zip(part.columns, part.fill)
    }
    categories = {
        c: list(k)
        for part in compiled.parts
        if isinstance(part, _OneHot)
        for c, k in zip(part.columns, part.categories)
    }
    n = max([len(v) + 2 for v in categories.values()] + [5])
    rows: dict[str, list[Any]] = {}
    for column in input_columns:
        if column in categories:
            values = [*categories[column], None, "__unseen__"]
        else:
            fill = float(numeric.get(column, 0.0))
            values = [np.nan, 0.0, fill, 2 * fill + 1, 1e6]
        rows[column] = [values[i % len(values)] for i in range(n)]
    return pd.DataFrame(rows, columns=list(input_columns))


def compile_pipeline(pipeline: Any, input_columns: list[str]) -> CompiledPipeline | None:
    """The numpy scoring path of ``pipeline``, or None when its structure is unknown or its scores differ."""
    try:
        compiled = _structure(pipeline)
        if compiled is None:
            return None
        rows = check_rows(compiled, input_columns)
        difference = float(np.max(np.abs(compiled.predict_proba(rows) - pipeline.predict_proba(rows))))
    except Exception as error:  # noqa: BLE001 - any failure means: keep the pipeline
        logger.warning("compiled scoring path unavailable (%s: %s); the pipeline scores", type(error).__name__, error)
        return None
    if difference > _TOLERANCE:
        logger.warning("compiled scoring path differs from the pipeline by %.3g; the pipeline scores", difference)
        return None
    return compiled
