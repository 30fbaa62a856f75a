"""Batch inference nodes: score every customer active at the scoring date with the champion.

The scoring rows are built with the training set's own code: the spine uses the label spine's
activity definition, and features come from the same ``FeatureLookup``s (same tables, windows and
``ingested_at`` filter), through ``build_training_set`` and the same on-demand features
(``on_demand_features``, computed as of the scoring time). Rows whose model inputs break a feature
contract (range, allowed values, a null where the null policy is ``drop``, or no feature row fresh
enough) or an on-demand feature's range or null policy are rejected with reasons and never scored.
The rest are scored inside Spark (``mapInArrow``, the model in the function's closure), once,
into a work table from which the predictions and rejections are written.

Times: scoring date D means "as of the end of D" — the scoring time is D+1 00:00 UTC, exactly
what a training cutoff on D+1 means (orders before it make a customer active; features stamped and
known by it are used).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakehouse_ml.capabilities import json_text
from lakehouse_ml.features.contracts import FeatureContract
from lakehouse_ml.features.expressions_spark import to_spark, with_on_demand_features
from lakehouse_ml.features.lookup import build_training_set, eligible_at
from lakehouse_ml.features.on_demand import (
    OnDemandFeature,
    looked_up_on_demand,
    parse_on_demand,
)
from lakehouse_ml.features.rules import RULES, table_rules
from lakehouse_ml.features.tables import CUTOFF, ENTITY, feature_lookups, parsed_contracts, resolve_lookups
from lakehouse_ml.pipelines.inference._scoring import scoring_function

logger = logging.getLogger(__name__)

PROBABILITY, DECISION, REASONS, REJECTED = "probability", "decision", "rejection_reasons", "_rejected"
KEY = ["scoring_date", "model_version"]
MODEL_COLUMNS = ["model_name", "model_version", "model_alias", "model_run_id"]
LINEAGE_COLUMNS = ["feature_table_versions", "orders_version"]
PREDICTION_COLUMNS = [
    ENTITY,
    "scoring_date",
    "scoring_ts",
    PROBABILITY,
    DECISION,
    "threshold",
    *MODEL_COLUMNS,
    *LINEAGE_COLUMNS,
    "scored_at",
    "features",
]
REJECTION_COLUMNS = [
    ENTITY,
    "scoring_date",
    "scoring_ts",
    "reason",
    REASONS,
    "features",
    *MODEL_COLUMNS,
    *LINEAGE_COLUMNS,
    "rejected_at",
]


# ---------------------------------------------------------------- scoring spine


def _utc_instant(micros: int) -> datetime:
    """An aware UTC datetime from microseconds since the epoch (immune to the client's time zone)."""
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=int(micros))


def _scoring_date(orders: DataFrame, inference: dict[str, Any]) -> tuple[date, str]:
    """The configured scoring date, else the latest day that had ended when the last delivery came."""
    configured = inference.get("scoring_date")
    if configured not in (None, ""):
        try:
            return date.fromisoformat(str(configured)), "configured"
        except ValueError:
            raise ValueError(
                f"inference.scoring_date must be a date like 2026-06-28 or null, got {configured!r}"
            ) from None
    last = orders.agg(F.unix_micros(F.max("delivered_at")).alias("last")).collect()[0]["last"]
    if last is None:
        raise ValueError("no orders have been delivered: there is nothing to score (run the ingest pipeline first)")
    return _utc_instant(last).date() - timedelta(days=1), "latest complete day"


def build_scoring_spine(
    orders: DataFrame, inference: dict[str, Any], training_set: dict[str, Any]
) -> tuple[DataFrame, dict[str, Any]]:
    """Customers active at the scoring time (an order in the lookback before it), as a spine.

    Active means what it means in the label spine (``training_set.spine.active_lookback_days``):
    at least one order in ``[T - lookback, T)`` for the scoring time T = scoring date + 1 day,
    00:00 UTC. A null ``inference.scoring_date`` scores the latest complete day: the last day that
    had ended when the latest order delivery arrived (``max(delivered_at)``), since the day of
    that delivery may still be receiving events.
    """
    day, source = _scoring_date(orders, inference)
    scoring_ts = datetime.combine(day + timedelta(days=1), time(), tzinfo=timezone.utc)
    lookback = int(training_set["spine"]["active_lookback_days"])
    at = F.lit(scoring_ts)
    spine = (
        orders.where((F.col("event_ts") >= at - F.expr(f"INTERVAL {lookback} DAYS")) & (F.col("event_ts") < at))
        .select(ENTITY)
        .distinct()
        .select(ENTITY, at.alias(CUTOFF))
    )
    scoring = {
        "scoring_date": day.isoformat(),
        "scoring_ts": scoring_ts.isoformat(),
        "source": source,
        "active_lookback_days": lookback,
    }
    logger.info(
        "inference: scoring date %s (%s), as of %s; active = an order in the %d days before",
        day,
        source,
        scoring_ts,
        lookback,
    )
    return spine, scoring


# ---------------------------------------------------------------- point-in-time features


def look_up_scoring_features(
    spine: DataFrame,
    tables: Mapping[str, DataFrame],
    scoring: dict[str, Any],
    feature_tables: dict[str, Any],
    on_demand_features: dict[str, Any] | None,
    training_set: dict[str, Any],
) -> DataFrame:
    """The training set's point-in-time lookups and on-demand features for the scoring spine."""
    contracts = parsed_contracts(feature_tables)
    scoring_ts = datetime.fromisoformat(scoring["scoring_ts"])
    resolved = resolve_lookups(contracts, training_set)
    lookups = [eligible_at(lookup, scoring_ts) for lookup in feature_lookups(tables, contracts, resolved)]
    on_demand = looked_up_on_demand(contracts, resolved, on_demand_features)
    return with_on_demand_features(build_training_set(spine, lookups, ENTITY, CUTOFF), on_demand, CUTOFF)


# ---------------------------------------------------------------- contract checks and scoring


def rejection_reasons(
    frame: DataFrame,
    contracts: dict[str, FeatureContract],
    inputs: list[str],
    scoring_ts: datetime,
    rules: list[str],
    on_demand: dict[str, OnDemandFeature] | None = None,
) -> Column:
    """Per row, why its model inputs break their contracts (empty when they do not).

    Only the model's input columns are judged, each against its table's contract (an on-demand
    feature against its declared range and null policy), by the rules of
    :mod:`lakehouse_ml.features.rules` (the online lookup judges with the same rules); each reason
    is ``<table>.<feature>: <rule> expected <promise>, got <value>``, like the features
    pipeline's violations. ``rules`` selects among range, allowed_values, null_policy, freshness.
    """
    unknown = sorted(set(rules) - set(RULES))
    if unknown:
        raise ValueError(f"inference.reject_on: unknown rules {unknown}; expected some of {list(RULES)}")
    types = {field.name: field.dataType for field in frame.schema.fields}
    reasons = [
        to_spark(rule.reason(), F.lit(scoring_ts))
        for rule in table_rules(contracts, inputs, rules, scoring_ts, on_demand)
        if rule.numeric_column is None or isinstance(types[rule.numeric_column], T.NumericType)
    ]
    if not reasons:
        return F.array().cast("array<string>")
    return F.filter(F.array(*reasons), lambda reason: reason.isNotNull())


def _versions(**infos: dict[str, Any]) -> Column:
    """``{table: version}`` of the feature tables read (null for a missing table)."""
    pairs = []
    for name, info in infos.items():
        pairs += [F.lit(name), F.lit(info.get("version")).cast("bigint")]
    return F.create_map(*pairs).cast("map<string,bigint>")


def _no_champion(scoring: dict[str, Any]) -> dict[str, Any]:
    """A stand-in release scoring no row: the default run of an environment without a champion yet."""
    logger.warning(
        "inference: no champion yet for %s: nothing scored (promote a challenger: kedro run --pipeline promotion)",
        scoring["scoring_date"],
    )
    # Typed placeholders for an empty frame (a null literal has no Delta type).
    return {
        "name": "",
        "version": "",
        "alias": "",
        "run_id": "",
        "operating_threshold": 1.0,
        "input_columns": [],
        "model": None,
    }


def score_scoring_rows(
    features: DataFrame,
    champion: dict[str, Any] | None,
    scoring: dict[str, Any],
    infos: Mapping[str, dict[str, Any]],
    orders_info: dict[str, Any],
    feature_tables: dict[str, Any],
    on_demand_features: dict[str, Any] | None,
    inference: dict[str, Any],
) -> tuple[DataFrame, dict[str, Any]]:
    """Every spine row with its rejection reasons, and the champion's score where there are none.

    Scoring runs inside Spark (``mapInArrow``; the model travels in the function's closure).
    The result carries the model's name, version, alias, run id and threshold, the versions of
    the tables read, the scoring date and time, and ``scored_at``; next to it, the release used
    (empty: the catalog entry allows a missing champion and there is none, so no row is scored).
    """
    release = {} if champion is None else {k: champion[k] for k in ("name", "version", "alias", "run_id")}
    if champion is None:
        champion, features = _no_champion(scoring), features.limit(0)
    inputs = list(champion["input_columns"])
    missing = [column for column in inputs if column not in features.columns]
    if missing:
        raise ValueError(
            f"model '{champion['name']}' version {champion['version']} needs input columns {missing} that the "
            f"training set's lookups do not produce (they produce {features.columns}): check training_set.lookups and lookup_defaults"
        )
    contracts = parsed_contracts(feature_tables)
    scoring_ts = datetime.fromisoformat(scoring["scoring_ts"])
    # The tables looked up are those whose timestamp column the features carry.
    looked_up = [t for t, c in contracts.items() if f"{t}__{c.timestamp_key}" in features.columns]
    stamps = [f"{t}__{contracts[t].timestamp_key}" for t in looked_up]
    on_demand = parse_on_demand(on_demand_features)
    reasons = rejection_reasons(
        features, contracts, inputs, scoring_ts, list(inference.get("reject_on", RULES)), on_demand
    )
    checked = features.select(
        ENTITY, *inputs, *[s for s in stamps if s not in inputs], reasons.alias(REASONS)
    ).withColumn(REJECTED, F.size(REASONS) > 0)
    schema = T.StructType([*checked.schema.fields, T.StructField(PROBABILITY, T.DoubleType(), True)])
    scored = checked.mapInArrow(scoring_function(champion["model"], inputs, REJECTED, PROBABILITY), schema)
    threshold = float(champion["operating_threshold"])
    probability = F.col(PROBABILITY)
    return scored.select(
        ENTITY,
        F.lit(date.fromisoformat(scoring["scoring_date"])).alias("scoring_date"),
        F.lit(scoring_ts).alias("scoring_ts"),
        probability,
        F.when(probability.isNotNull(), (probability >= F.lit(threshold)).cast("int")).alias(DECISION),
        F.lit(threshold).alias("threshold"),
        F.lit(champion["name"]).alias("model_name"),
        F.lit(str(champion["version"])).alias("model_version"),
        F.lit(champion["alias"]).alias("model_alias"),
        F.lit(champion["run_id"]).cast("string").alias("model_run_id"),
        _versions(**{name: infos[name] for name in looked_up}).alias("feature_table_versions"),
        F.lit(orders_info.get("version")).cast("bigint").alias("orders_version"),
        F.current_timestamp().alias("scored_at"),
        REJECTED,
        REASONS,
        *inputs,
        *[s for s in stamps if s not in inputs],
    ), release


# ---------------------------------------------------------------- gate, outputs, summary


def _reason_rule(reason: Column) -> Column:
    """``<table>.<feature>: <rule>`` of a reason (its value left out), for counting."""
    return F.regexp_extract(reason, r"^(\S+: \S+)", 1)


def check_scoring_rows(rows: DataFrame, release: dict[str, Any], inference: dict[str, Any]) -> dict[str, Any]:
    """Count scored and rejected rows with the top reasons; fail when too much is rejected.

    Fails (before anything is published) when no customer is active at the scoring date, when
    no row could be scored, or when the rejected share exceeds ``inference.max_rejected_rate``.
    Without a release (no champion yet) the summary says ``skipped`` and nothing is published.
    """
    if not release:
        return {"skipped": "no champion"}
    totals = (
        rows.agg(
            F.count(F.lit(1)).alias("rows"),
            F.count(F.when(F.col(REJECTED), True)).alias("rejected"),
            F.count(F.when(F.col(DECISION) == 1, True)).alias("positive"),
            F.avg(PROBABILITY).alias("mean_probability"),
            *[F.first(c).alias(c) for c in ["scoring_date", "scoring_ts", "threshold", *MODEL_COLUMNS]],
        )
        .collect()[0]
        .asDict()
    )
    top = (
        rows.where(F.col(REJECTED))
        .select(F.explode(REASONS).alias("reason"))
        .groupBy(_reason_rule(F.col("reason")).alias("rule"))
        .count()
        .orderBy(F.desc("count"), "rule")
        .limit(int(inference.get("top_reasons", 5)))
        .collect()
    )
    summary = {
        **{k: totals[k] for k in MODEL_COLUMNS},
        "scoring_date": str(totals["scoring_date"]) if totals["scoring_date"] else None,
        "threshold": totals["threshold"],
        "rows": int(totals["rows"]),
        "rejected": int(totals["rejected"]),
        "scored": int(totals["rows"]) - int(totals["rejected"]),
        "positive": int(totals["positive"]),
        "mean_probability": totals["mean_probability"],
        "top_reasons": [{"rule": row["rule"], "rows": int(row["count"])} for row in top],
    }
    summary["rejected_rate"] = summary["rejected"] / summary["rows"] if summary["rows"] else 0.0
    limit = float(inference.get("max_rejected_rate", 1.0))
    reasons = ", ".join(f"{r['rule']} x{r['rows']}" for r in summary["top_reasons"]) or "-"
    if summary["rows"] == 0:
        raise ValueError(
            "inference: no customer is active at the scoring date (no order in the lookback before it); "
            "check inference.scoring_date against the data"
        )
    if summary["scored"] == 0 or summary["rejected_rate"] > limit:
        raise ValueError(
            f"inference: {summary['rejected']} of {summary['rows']} rows ({summary['rejected_rate']:.1%}) break their "
            f"feature contracts, above inference.max_rejected_rate={limit:.1%}; nothing was published. "
            f"Top reasons: {reasons}. Fix the feature tables (or the scoring date) and re-run."
        )
    return summary


def _with_features(rows: DataFrame) -> DataFrame:
    """``rows`` with ``features``: the model inputs and feature timestamps as JSON, as scored (what
    monitoring profiles; JSON keeps the table's schema when a new model version takes other inputs)."""
    inputs = [c for c in rows.columns if c not in {*PREDICTION_COLUMNS, REJECTED, REASONS}]
    return rows.withColumn("features", json_text(F.struct(*inputs)))


def select_predictions(rows: DataFrame, summary: dict[str, Any]) -> DataFrame:
    """The scored rows, as the predictions table's columns (model inputs as JSON in ``features``)."""
    if summary.get("skipped"):
        return _with_features(rows).select(*PREDICTION_COLUMNS)  # empty: the replace writes nothing
    logger.info(
        "inference: writing %d predictions of %s version %s for %s",
        summary["scored"],
        summary["model_name"],
        summary["model_version"],
        summary["scoring_date"],
    )
    return _with_features(rows.where(~F.col(REJECTED))).select(*PREDICTION_COLUMNS)


def select_rejections(rows: DataFrame, recorded: DataFrame, summary: dict[str, Any]) -> DataFrame:
    """The rejected rows with their reasons, plus delete markers for earlier rejections now gone.

    Written by MERGE on (scoring_date, model_version, customer_id): a re-run replaces the
    rejections of its scoring date and model version, also when it rejects nothing (an empty
    replace would write nothing and leave the old rows).
    """
    rejected = (
        _with_features(rows.where(F.col(REJECTED)))
        .withColumns(
            {
                "reason": F.array_join(REASONS, "; "),
                "rejected_at": F.col("scored_at"),
                "_deleted": F.lit(False),
            }
        )
        .select(*REJECTION_COLUMNS, "_deleted")
    )
    if summary.get("skipped"):
        return rejected  # empty: the MERGE changes nothing
    mine = (F.col("scoring_date") == F.lit(date.fromisoformat(summary["scoring_date"]))) & (
        F.col("model_version") == F.lit(summary["model_version"])
    )
    keys = [ENTITY, *KEY]
    gone = recorded.where(mine).select(*keys).join(rejected.select(*keys), keys, "left_anti")
    # Typed nulls, not unionByName(allowMissingColumns): a missing array column can lose its type.
    markers = gone.select(
        *[
            F.col(field.name)
            if field.name in keys
            else F.lit(True if field.name == "_deleted" else None).cast(field.dataType).alias(field.name)
            for field in rejected.schema.fields
        ]
    )
    return rejected.unionByName(markers)


def report_inference(predictions: DataFrame, summary: dict[str, Any]) -> dict[str, Any]:
    """Check the predictions table holds this run's rows once; log the summary; return metrics."""
    if summary.get("skipped"):
        logger.info("inference: skipped (%s)", summary["skipped"])
        return {}
    mine = (F.col("scoring_date") == F.lit(date.fromisoformat(summary["scoring_date"]))) & (
        F.col("model_version") == F.lit(summary["model_version"])
    )
    stored = (
        predictions.where(mine)
        .agg(F.count(F.lit(1)).alias("rows"), F.countDistinct(ENTITY).alias("customers"))
        .collect()[0]
    )
    if stored["rows"] != summary["scored"] or stored["customers"] != summary["scored"]:
        raise AssertionError(
            f"inference: the predictions table holds {stored['rows']} rows ({stored['customers']} customers) for "
            f"{summary['scoring_date']} and version {summary['model_version']}, expected {summary['scored']}"
        )
    reasons = ", ".join(f"{r['rule']} x{r['rows']}" for r in summary["top_reasons"]) or "none"
    logger.info(
        "inference: %s version %s (%s) on %s: %d rows, %d scored (%d at or above threshold %.4f), %d rejected (%.1f%%; %s)",
        summary["model_name"],
        summary["model_version"],
        summary["model_alias"],
        summary["scoring_date"],
        summary["rows"],
        summary["scored"],
        summary["positive"],
        summary["threshold"],
        summary["rejected"],
        100 * summary["rejected_rate"],
        reasons,
    )
    figures = {
        "inference.rows": summary["rows"],
        "inference.scored": summary["scored"],
        "inference.rejected": summary["rejected"],
        "inference.rejected_rate": summary["rejected_rate"],
        "inference.positive_rate": summary["positive"] / summary["scored"],
        "inference.mean_probability": summary["mean_probability"],
    }
    return {name: {"value": float(value), "step": 0} for name, value in figures.items() if value is not None}
