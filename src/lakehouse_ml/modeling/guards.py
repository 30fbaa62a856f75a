"""Guards on training data: fail with what is wrong and what to change, instead of fitting garbage.

A lookup that matched nothing, a label with one class, too few cutoffs for the split or an
all-null feature still give a model and a metric (ROC AUC 0.5) without a word; these guards stop
the run and say why. Each rule and its message is one small function over counts or a pandas
frame, returning the problem as text (``None``: fine); the pipelines measure and call them, and
:func:`raise_problems` fails with every problem found:

- :func:`coverage_problem`: the share of spine rows whose point-in-time lookup matched a feature
  row, with the likely cause when too low (measured in Spark by :func:`matched_counts` and, only
  then, :func:`unmatched_causes`);
- :func:`label_problem`: both label classes occur;
- :func:`cutoffs_problem`: enough cutoffs for the folds, the gap and the test window;
- :func:`feature_problem`: no all-null feature; :func:`constant_features` finds the constant ones
  (left out of the model, or failing, as ``tuning.guards.constant_features`` says).

The messages name this project's settings (``training_set.*``, ``tuning.*``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

__all__ = [
    "CAUSES",
    "LookupCoverage",
    "TrainingDataError",
    "constant_features",
    "coverage_problem",
    "cutoffs_problem",
    "feature_problem",
    "label_problem",
    "matched_counts",
    "raise_problems",
    "unmatched_causes",
]


class TrainingDataError(ValueError):
    """The training data cannot give a meaningful model; the message says what to change."""


def raise_problems(problems: Iterable[str | None], where: str) -> None:
    """Raise one :class:`TrainingDataError` listing every problem found (``None``: no problem)."""
    found = [p for p in problems if p]
    if len(found) == 1:
        raise TrainingDataError(f"{where}: {found[0]}")
    if found:
        raise TrainingDataError(f"{where}: {len(found)} problems:\n" + "\n".join(f"- {p}" for p in found))


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


# ---------------------------------------------------------------- lookup coverage

#: Why a spine row matched no feature row, as told by :func:`unmatched_causes`, in the order the
#: lookup's rules exclude rows (key, then time stamp, then availability, then the window).
CAUSES = (
    "no_row_for_key",  # the feature table holds no row with the spine row's key
    "stamped_after_cutoff",  # every row of the key is stamped (feature_ts) after the cutoff
    "known_after_cutoff",  # rows stamped by the cutoff exist, but none was known (ingested_at) by it
    "outside_lookback_window",  # rows stamped and known by the cutoff exist, all older than the window
    "other",  # NULL keys or times
)


@dataclass(frozen=True)
class LookupCoverage:
    """How many spine rows one lookup matched, and why the others did not (when measured)."""

    table: str
    rows: int
    matched: int
    keys: tuple[str, ...] = ()
    causes: Mapping[str, int] = field(default_factory=dict)

    @property
    def share(self) -> float:
        """The share of spine rows matched (1.0 for an empty spine: nothing was missed)."""
        return self.matched / self.rows if self.rows else 1.0


def _cause_advice(coverage: LookupCoverage, cause: str) -> str:
    """The likely cause in words and what to change, for the dominant cause of unmatched rows."""
    table, keys = coverage.table, ", ".join(coverage.keys) or "key"
    lookup = f"training_set.lookups.{table}"
    if cause == "known_after_cutoff":
        return (
            f"all feature rows stamped by the cutoff became known (ingested_at, the availability time) only "
            f"after the cutoff, so no value was known yet at it. The availability time is probably a delivery "
            f"or bulk-load date rather than when each value was known (one file holding the whole history "
            f"gives every row the same late ingested_at). Change: say when each record became known with "
            f"ingest.sources.<source>.known_at (e.g. {{event_time_plus: 1 day}} for a one-off export of "
            f"history, or {{column: <its time>}}) and rebuild (ingest.full_rebuild=true), or, if feature_ts "
            f"already is that time, stop filtering on availability with {lookup}.filter_by_ingested_at: false"
        )
    if cause == "no_row_for_key":
        return (
            f"the keys do not match: the feature table has no row at all for these {keys} values (or it is "
            f"empty). Change: make the spine's and the feature table's {keys} hold the same values (format, "
            f"case, padding, type) and check the contract's entity_keys"
        )
    if cause == "stamped_after_cutoff":
        return (
            "the feature table's history starts after these cutoffs: every row of these keys is stamped "
            "(feature_ts) after the cutoff. Change: start the cutoffs later (training_set.spine.first_cutoff "
            "or warmup_days) or backfill the feature table (features.backfill)"
        )
    if cause == "outside_lookback_window":
        return (
            f"the latest row known at the cutoff is older than the lookback window. Change: "
            f"{lookup}.lookback_window (null: the tightest freshness among the contract's features) or "
            f"refresh the feature table more often"
        )
    return (
        f"keys or time stamps are NULL. Change: fill the spine's and the feature table's {keys}, feature_ts "
        f"and ingested_at"
    )


def coverage_problem(coverage: LookupCoverage, min_share: float) -> str | None:
    """Too few spine rows matched a feature row: the table, the counts and the likely cause.

    The likely cause is the most frequent of ``coverage.causes`` (see :data:`CAUSES`); without
    measured causes the message stays generic.
    """
    if coverage.rows == 0 or coverage.share >= min_share:
        return None
    unmatched = coverage.rows - coverage.matched
    head = (
        f"lookup '{coverage.table}' matched a feature row for {coverage.matched:,} of {coverage.rows:,} spine rows "
        f"({_share(coverage.matched, coverage.rows)}); training_set.guards.min_matched_share expects at least "
        f"{100 * min_share:.1f}%"
    )
    counted = {c: int(n) for c, n in coverage.causes.items() if n}
    if not counted:
        return (
            f"{head}. Compare the spine's keys and cutoffs with the feature table's keys, feature_ts and "
            f"ingested_at (training_set.lookups.{coverage.table} over lookup_defaults), or lower training_set.guards.min_matched_share"
        )
    cause = max(CAUSES, key=lambda c: counted.get(c, 0))
    breakdown = ", ".join(f"{c} {counted[c]:,}" for c in CAUSES if c in counted)
    return (
        f"{head}. Likely cause ({counted[cause]:,} of the {unmatched:,} unmatched rows): "
        f"{_cause_advice(coverage, cause)}. Unmatched rows by cause: {breakdown}"
    )


def matched_counts(training_set: Any, lookups: Sequence[Any], label: str | None = None) -> dict[str, Any]:
    """Spine rows, rows matched per lookup and label counts (0 and 1), in one Spark aggregation.

    A row matched a lookup when its ``<prefix><timestamp_key>`` column is set: the lookups must
    return their ``timestamp_key`` (``lookup.label`` names them in the result).
    """
    from pyspark.sql import functions as F

    aggregates = [F.count(F.lit(1)).alias("rows")]
    for index, lookup in enumerate(lookups):
        aggregates.append(F.count(F.col(_stamp_column(lookup))).alias(f"matched_{index}"))
    if label is not None:
        for value in (0, 1):
            aggregates.append(F.sum((F.col(label) == value).cast("long")).alias(f"label_{value}"))
    row = training_set.agg(*aggregates).collect()[0].asDict()
    return {
        "rows": int(row["rows"]),
        "matched": {lookup.label: int(row[f"matched_{i}"]) for i, lookup in enumerate(lookups)},
        "labels": {v: int(row[f"label_{v}"] or 0) for v in (0, 1)} if label is not None else {},
    }


def _stamp_column(lookup: Any) -> str:
    if lookup.timestamp_key not in lookup.feature_names:
        raise ValueError(
            f"lookup '{lookup.label}' does not return its timestamp_key {lookup.timestamp_key!r}: "
            "add it to feature_names to measure which spine rows it matched"
        )
    return f"{lookup.prefix}{lookup.timestamp_key}"


def unmatched_causes(training_set: Any, lookup: Any, timestamp_key: str) -> dict[str, int]:
    """Why the spine rows a lookup did not match were not matched: counts per cause of :data:`CAUSES`.

    Per key of the feature table, the earliest ``feature_ts`` and the earliest time a row was
    both stamped and known (``max(feature_ts, ingested_at)`` when filtering by ``ingested_at``)
    decide it exactly: no row for the key; every row stamped after the cutoff; rows stamped by the
    cutoff but none known by it; else rows known by the cutoff exist, all outside the window.
    One aggregation and a join: run it when the share is too low, not on every build.
    """
    from pyspark.sql import functions as F

    from lakehouse_ml.features.lookup import read_source

    keys = list(lookup.lookup_key)
    stamped = F.col(lookup.timestamp_key)
    available = stamped
    if lookup.filter_by_ingested_at:
        known = F.col(lookup.ingested_at_key)
        # greatest() skips NULLs, but a row without ingested_at is never eligible
        available = F.when(known.isNull(), F.lit(None)).otherwise(F.greatest(stamped, known))
    source = read_source(lookup, training_set.sparkSession)
    usable = source
    for key in keys:
        usable = usable.where(F.col(key).isNotNull())
    per_key = usable.groupBy(*keys).agg(
        F.min(stamped).alias("_first_stamped"), F.min(available).alias("_first_known"), F.lit(True).alias("_has_row")
    )
    unmatched = training_set.where(F.col(_stamp_column(lookup)).isNull()).select(
        *keys, F.col(timestamp_key).alias("_at")
    )
    null_key = F.lit(False)
    for key in keys:
        null_key |= F.col(key).isNull()
    at = F.col("_at")
    cause = (
        F.when(null_key | at.isNull(), "other")
        .when(F.col("_has_row").isNull(), "no_row_for_key")
        .when(F.col("_first_stamped").isNull(), "other")
        .when(F.col("_first_stamped") > at, "stamped_after_cutoff")
        .when(F.col("_first_known").isNull() | (F.col("_first_known") > at), "known_after_cutoff")
        .otherwise("outside_lookback_window")
    )
    rows = unmatched.join(per_key, keys, "left").groupBy(cause.alias("cause")).count().collect()
    return {row["cause"]: int(row["count"]) for row in rows}


# ---------------------------------------------------------------- label


def label_problem(counts: Mapping[Any, int], label: str = "churned") -> str | None:
    """The label holds a single class (all 0 or all 1): no model can learn to tell them apart."""
    negatives, positives = int(counts.get(0, 0)), int(counts.get(1, 0))
    total = negatives + positives
    if total == 0 or (negatives and positives):
        return None
    if positives == 0:
        why = (
            "nobody churned: every customer active at a cutoff ordered again within the horizon. Change: a "
            "longer training_set.spine.horizon_days (churned = no order within it)"
        )
    else:
        why = (
            "everybody churned: no customer active at a cutoff ordered again within the horizon, which "
            "usually means the orders after the cutoffs are missing (check orders_silver covers "
            "training_set.spine.horizon_days after the last cutoff). Change: a shorter "
            "training_set.spine.horizon_days or a history that covers it"
        )
    return (
        f"the label {label} has a single class in {total:,} spine rows (0: {negatives:,}, 1: {positives:,}): {why}; "
        f"or change which customers and cutoffs are in the spine (training_set.spine.active_lookback_days, "
        f"first_cutoff, warmup_days, every_days)"
    )


# ---------------------------------------------------------------- cutoffs for the split


def cutoffs_problem(n_cutoffs: int, n_folds: int, test_cutoffs: int, gap_cutoffs: int) -> str | None:
    """Too few distinct cutoffs for ``n_folds`` folds (a training and a validation cutoff each at
    the least), the ``gap_cutoffs`` before each validation block and the ``test_cutoffs`` window."""
    if n_folds < 1 or test_cutoffs < 0 or gap_cutoffs < 0:
        return (
            f"tuning.n_folds must be >= 1 and tuning.test_cutoffs, tuning.gap_cutoffs >= 0, got "
            f"n_folds={n_folds}, test_cutoffs={test_cutoffs}, gap_cutoffs={gap_cutoffs}"
        )
    needed = test_cutoffs + gap_cutoffs + n_folds + 1
    if n_cutoffs >= needed:
        return None
    return (
        f"{n_cutoffs} distinct cutoffs are too few for the split: tuning.test_cutoffs={test_cutoffs} "
        f"+ tuning.gap_cutoffs={gap_cutoffs} + tuning.n_folds={n_folds} + 1 (one training cutoff before "
        f"the first validation block) = {needed} at the least. Change: build a training set with more "
        f"cutoffs (a longer history, e.g. simulate.n_days; denser training_set.spine.every_days; an earlier "
        f"training_set.spine.first_cutoff or shorter warmup_days) or lower tuning.n_folds, "
        f"tuning.test_cutoffs or tuning.gap_cutoffs"
    )


# ---------------------------------------------------------------- feature variation


def constant_features(
    rows: pd.DataFrame, features: Sequence[str], imputation: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Features holding one value in every one of ``rows`` once the contract's imputation is applied
    (``{feature: value}``): a feature of a source that delivered nothing is 0 or imputed 0 throughout.
    A single value with NULLs left (no imputation) is not constant: whether a value is there can
    carry signal. All-NULL features are :func:`feature_problem`'s."""
    found = {}
    for name in features:
        values = rows[name]
        if name in (imputation or {}):
            values = values.where(values.notna(), (imputation or {})[name])
        if not rows.empty and values.notna().all() and values.nunique() == 1:
            value = values.iloc[0]
            found[name] = value.item() if hasattr(value, "item") else value  # 0.0, not np.float64(0.0)
    return found


def feature_problem(
    rows: pd.DataFrame, features: Sequence[str], constant: Mapping[str, Any] | None = None
) -> str | None:
    """Features the model would learn nothing from in ``rows`` (the rows it is fit on): all-NULL
    ones (what a lookup that matched nothing gives), and the ``constant`` ones when they must fail
    (``tuning.guards.constant_features: fail``)."""
    if rows.empty:
        return None
    all_null = [name for name in features if rows[name].isna().all()]
    if not all_null and not constant:
        return None
    where = f"the {len(rows):,} training rows (cutoffs {_cutoff_range(rows)})"
    parts = []
    if all_null:
        parts.append(
            f"{len(all_null)} feature(s) are NULL in every one of {where}: {', '.join(all_null)}. A lookup that "
            "matched no feature row gives this (see the training set's leakage.<table>.rows_matched metrics and "
            "training_set.guards.min_matched_share); fix the lookup or the source, or leave the feature out "
            "(training_set.lookups.<table>.features; an on-demand feature: on_demand_features.<name>: null)"
        )
    if constant:
        listed = ", ".join(f"{name} = {value!r}" for name, value in constant.items())
        parts.append(
            f"{len(constant)} feature(s) hold one value in every one of {where}: {listed}. A constant teaches the "
            "model nothing and usually means a source that delivered nothing or a default filled in everywhere; fix "
            "the source, or set tuning.guards.constant_features: leave_out to train without them"
        )
    return "; ".join(parts)


def _cutoff_range(rows: pd.DataFrame, column: str = "cutoff_ts") -> str:
    if column not in rows.columns:
        return "-"
    first, last = rows[column].min(), rows[column].max()
    return f"{pd.Timestamp(first).date()}..{pd.Timestamp(last).date()}"
