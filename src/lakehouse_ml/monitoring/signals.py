"""The long signal schema the three metric tables share (``drift_metrics``, ``performance_metrics``,
``data_quality``): window, source, model, slice, feature, metric, value, warn/act thresholds,
status, rows and details, so that the rules read them alike."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from lakehouse_ml.monitoring.served import SLICED, WINDOW

SIGNAL_TABLE_COLUMNS = [*SLICED, "feature", "metric", "value", "warn", "act", "status", "n_rows", "details"]
INFORMATION = {"warn": None, "act": None, "status": "ok"}


def signal_row(
    row: Mapping[str, Any], keys: Sequence[str], feature: str, metric: str, value: Any, **extra: Any
) -> dict[str, Any]:
    """One long signal row."""
    number = None if value is None or (isinstance(value, float) and np.isnan(value)) else float(value)
    signal = {
        **{k: row[k] for k in keys},
        "feature": feature,
        "metric": metric,
        "value": number,
        **INFORMATION,
        **extra,
    }
    if number is None and signal["status"] not in ("untrusted",):
        signal["status"] = "no_data"
    return signal


def signal_frame(
    rows: list[dict[str, Any]] | pd.DataFrame, columns: Sequence[str] = SIGNAL_TABLE_COLUMNS
) -> pd.DataFrame:
    """Rows as a frame of the signal schema with stable types (dates, strings, floats)."""
    frame = pd.DataFrame(rows, columns=list(columns))
    for column in WINDOW:
        frame[column] = pd.to_datetime(frame[column]).dt.date
    for column in ("value", "warn", "act"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    frame["n_rows"] = pd.to_numeric(frame["n_rows"], errors="coerce").fillna(0).astype("int64")
    return frame


def untrusted_small_slices(signals: pd.DataFrame, min_rows: int) -> pd.DataFrame:
    """A slice window with fewer than ``min_rows`` rows keeps its figures but no verdict (its PSI is noise)."""
    small = (signals["slice"] != "all") & (signals["n_rows"] < min_rows) & signals["status"].isin(["ok", "warn", "act"])
    signals.loc[small & signals["warn"].notna(), "status"] = "untrusted"
    return signals


def united_signals(drift: pd.DataFrame, performance: pd.DataFrame, quality: pd.DataFrame) -> pd.DataFrame:
    """The three tables' rows as one frame with the table they come from."""
    parts = [
        frame[SIGNAL_TABLE_COLUMNS].assign(table=name)
        for name, frame in (("drift_metrics", drift), ("performance_metrics", performance), ("data_quality", quality))
        if len(frame)
    ]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[*SIGNAL_TABLE_COLUMNS, "table"])
