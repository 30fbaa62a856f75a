"""What a feature lookup asks for: the table, its features, keys and time columns, the lookback.

The definition only: it loads no engine, so the scoring service builds the same lookups the
training set does (``lakehouse_ml.online.vectors``). Answering them is
:func:`lakehouse_ml.features.lookup.build_training_set` (Spark).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

__all__ = ["FeatureLookup", "FeatureLookupError", "column_names", "is_spark_dataframe", "parse_lookback_window"]


def is_spark_dataframe(value: Any) -> bool:
    """Whether ``value`` is a Spark DataFrame (classic or Connect), told without importing Spark."""
    return any(cls.__module__.startswith("pyspark.sql") and cls.__name__ == "DataFrame" for cls in type(value).__mro__)


class FeatureLookupError(ValueError):
    """A feature lookup or training-set request is invalid (missing columns, bad types, ...)."""


# ------------------------------------------------------------------------------------- windows

_UNITS = {
    "w": "weeks", "wk": "weeks", "wks": "weeks", "week": "weeks", "weeks": "weeks",
    "d": "days", "day": "days", "days": "days",
    "h": "hours", "hr": "hours", "hrs": "hours", "hour": "hours", "hours": "hours",
    "m": "minutes", "min": "minutes", "mins": "minutes", "minute": "minutes", "minutes": "minutes",
    "s": "seconds", "sec": "seconds", "secs": "seconds", "second": "seconds", "seconds": "seconds",
    "ms": "milliseconds", "milli": "milliseconds", "millis": "milliseconds",
    "millisecond": "milliseconds", "milliseconds": "milliseconds",
    "us": "microseconds", "micro": "microseconds", "micros": "microseconds",
    "microsecond": "microseconds", "microseconds": "microseconds",
}  # fmt: skip
_PART = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]+)\s*,?", re.IGNORECASE)


def parse_lookback_window(window: timedelta | str | None) -> timedelta | None:
    """Parse a lookback window: a ``timedelta`` or text like ``"30 days"``, ``"1 day 12 hours"``,
    ``"90 min"``, ``"INTERVAL 7 DAYS"``. Months and years are refused (not a fixed duration)."""
    if window is None or isinstance(window, timedelta):
        parsed = window
    elif isinstance(window, str):
        text = re.sub(r"^\s*interval\s+", "", window.strip(), flags=re.IGNORECASE)
        parts, end = [], 0
        for match in _PART.finditer(text):
            if match.start() != end:
                break
            parts.append(match)
            end = match.end()
        unknown = [m.group(2) for m in parts if m.group(2).lower() not in _UNITS]
        if not parts or end != len(text) or unknown:
            raise FeatureLookupError(
                f"lookback_window {window!r} is not a duration like '30 days' or '1 day 12 hours' "
                f"(units: weeks, days, hours, minutes, seconds, ms, us; no months or years)"
            )
        parsed = timedelta()
        for match in parts:
            parsed += timedelta(**{_UNITS[match.group(2).lower()]: float(match.group(1))})
    else:
        raise FeatureLookupError(
            f"lookback_window must be a timedelta, a string like '30 days' or None, got {type(window).__name__}"
        )
    if parsed is not None and parsed < timedelta(0):
        raise FeatureLookupError(f"lookback_window must not be negative, got {window!r}")
    return parsed


# -------------------------------------------------------------------------------------- lookup


def column_names(value: Any, what: str) -> tuple[str, ...]:
    """``value`` (one name or a list) as a tuple of distinct, non-empty column names, or an error naming ``what``."""
    if isinstance(value, str):
        value = [value]
    names = tuple(value) if isinstance(value, (list, tuple)) else None
    if not names or not all(isinstance(name, str) and name for name in names):
        raise FeatureLookupError(f"{what} must be a non-empty list of column names, got {value!r}")
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise FeatureLookupError(f"{what} lists {duplicated} more than once")
    return names


@dataclass(frozen=True)
class FeatureLookup:
    """Which features to take from one feature table, and how to match them to the spine.

    - ``source``: a Spark DataFrame, or the path/URI of a Delta table (read when the training
      set is built);
    - ``feature_names``: the feature table's columns to return;
    - ``lookup_key``: the feature table's key column(s); the spine must have columns of the same
      names and types (a single name or a list);
    - ``timestamp_key``: the feature table's timestamp column (``feature_ts``);
    - ``lookback_window``: ignore rows older than the spine time minus this (``timedelta`` or text
      like ``"30 days"``; normalised to a ``timedelta``); ``None`` = no limit;
    - ``ingested_at_key``: the column telling when a row became known (``ingested_at``); it
      breaks ties on ``timestamp_key``, a NULL lowest;
    - ``filter_by_ingested_at``: also ignore rows ingested after the spine time (needs
      ``ingested_at_key``);
    - ``name``: the table's name for the default prefix; defaults to the last path component of a
      path source, and is required for a DataFrame source unless ``prefix`` is given;
    - ``prefix``: prepended to each feature name in the result; defaults to ``f"{name}__"``
      (``""`` keeps the bare feature names).

    ``feature_names`` and ``lookup_key`` are normalised to tuples.
    """

    source: Any  # a Spark DataFrame or a Delta table path
    feature_names: list[str]
    lookup_key: str | list[str]
    timestamp_key: str
    lookback_window: timedelta | str | None = None
    ingested_at_key: str | None = None
    filter_by_ingested_at: bool = False
    prefix: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        def fix(field: str, value: Any) -> None:
            object.__setattr__(self, field, value)

        if not (isinstance(self.source, str) or is_spark_dataframe(self.source)) or (
            isinstance(self.source, str) and not self.source.strip()
        ):
            raise FeatureLookupError(
                f"FeatureLookup source must be a Spark DataFrame or a Delta table path, got {self.source!r}"
            )
        fix("feature_names", column_names(self.feature_names, "FeatureLookup feature_names"))
        fix("lookup_key", column_names(self.lookup_key, "FeatureLookup lookup_key"))
        for field in ("timestamp_key", "ingested_at_key"):
            value = getattr(self, field)
            if not (isinstance(value, str) and value) and not (value is None and field != "timestamp_key"):
                raise FeatureLookupError(f"FeatureLookup {field} must be a column name, got {value!r}")
        fix("lookback_window", parse_lookback_window(self.lookback_window))
        if self.filter_by_ingested_at and self.ingested_at_key is None:
            raise FeatureLookupError("FeatureLookup filter_by_ingested_at=True needs ingested_at_key")
        keys_as_features = [f for f in self.feature_names if f in self.lookup_key]
        if keys_as_features:
            raise FeatureLookupError(
                f"FeatureLookup feature_names {keys_as_features} are lookup keys: the spine has them"
            )
        if self.name is None and isinstance(self.source, str):
            fix("name", self.source.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1] or None)
        if self.prefix is None:
            if not self.name:
                raise FeatureLookupError(
                    "FeatureLookup with a DataFrame source needs a name (default prefix "
                    "'<name>__') or an explicit prefix ('' for bare feature names)"
                )
            fix("prefix", f"{self.name}__")
        if not isinstance(self.prefix, str):
            raise FeatureLookupError(f"FeatureLookup prefix must be a string, got {self.prefix!r}")

    @property
    def label(self) -> str:
        """How errors name this lookup."""
        return self.name or (self.prefix.rstrip("_") if self.prefix else "") or "<DataFrame>"

    def output_columns(self) -> list[str]:
        """The result's column names for this lookup's features."""
        return [f"{self.prefix}{feature}" for feature in self.feature_names]
