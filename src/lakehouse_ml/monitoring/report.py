"""Charts of one monitoring run (feature drift, prediction drift, performance, data quality) and one
self-contained HTML page with the charts, a summary line per table and the actions that fired.

Inputs are pandas frames in the long signal schema of the monitoring tables (``window_start``,
``source``, ``model_name``, ``model_version``, ``slice``, ``slice_value``, ``feature``, ``metric``,
``value``, ``warn``, ``act``, ``status``, …; performance adds ``basis``, ``lower``, ``upper``,
``trusted``) and the actions frame. Conventions shared by the charts:

* Only rows of slice ``'all'`` are drawn. x is ``window_start`` (dates, ``datetime.date`` as
  ``toPandas`` returns them, or strings); a series has one point per window. When a window holds two
  rows of one series (a monitoring run appended twice), the later row in frame order wins.
* A series is one feature (or metric). When the drawn rows mix sources, model names or model
  versions, each combination is its own series and its label says which, e.g. ``age [online, v3]``.
* Threshold lines are dashed at every distinct non-null ``warn`` (orange) and ``act`` (red) value
  of the drawn rows, since each row carries its own thresholds (a changed threshold gives two lines).
  Lines are drawn where the rows put them: a metric where low is bad (ROC AUC) gets its lines below.
* "Latest value" of a series is its value in the last window where it has one.
* A frame with nothing to draw (empty, or no row of slice ``'all'`` with the metric the chart
  needs) gives a figure that says "no data"; a non-empty frame without a needed column raises a
  ``ValueError`` naming the column.

Figures are ``matplotlib.figure.Figure`` built without pyplot, as in ``modeling.plots``: no global
figure registry to leak into, no GUI backend. ``monitoring_report`` returns them as a dict, the
shape kedro-datasets' ``MatplotlibDataset`` saves (one file per key).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
from typing import Any

import matplotlib
import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from lakehouse_ml.modeling.plots import titled_figure
from lakehouse_ml.monitoring.drift import MAIN_METRIC
from lakehouse_ml.monitoring.rules import SCORING_SOURCES

NO_DATA = "no data"
PREDICTION_FEATURE = "__prediction__"
MAIN_METRICS = tuple(MAIN_METRIC.values())
PREDICTION_METRICS = ("positive_rate", "positive_rate_change")
SIGNAL_COLUMNS = ("window_start", "slice", "feature", "metric", "value", "warn", "act")
ACTION_COLUMNS = (
    "action_id",
    "rule",
    "action",
    "model_name",
    "model_version",
    "window_start",
    "window_end",
    "breached_windows",
    "considered_windows",
    "evidence",
    "mode",
    "status",
)
STATUS_ORDER = ("act", "warn", "untrusted", "no_data", "ok")
FIGURES = ("drift_over_time", "score_distribution", "performance_over_time", "quality_over_time")
_SEVERITY = {"act": 2, "warn": 1}
_DIMENSIONS = ("source", "model_name", "model_version")
_ANNOTATE_CELLS = 300  # above this many heatmap cells the value texts overlap
_WINDOW_TICKS = 15  # above this many windows, ticks every window would overlap


# ---------------------------------------------------------------- rows and series


def _require(frame: pd.DataFrame, columns: Sequence[str], name: str, caller: str) -> None:
    """Raise when ``frame`` lacks any of ``columns``."""
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(
            f"{caller}: the {name} frame has no column(s) {missing}; expected the monitoring schema "
            f"with at least {list(columns)}, got {list(frame.columns)}"
        )


def _slice_all(frame: pd.DataFrame, columns: Sequence[str], name: str, caller: str) -> pd.DataFrame:
    """Rows of slice 'all' with dates as datetimes and numbers as floats (empty frames pass unchecked)."""
    if frame.empty:
        return pd.DataFrame(columns=list(columns))
    _require(frame, columns, name, caller)
    rows = frame[frame["slice"] == "all"].copy()
    rows["window_start"] = pd.to_datetime(rows["window_start"])
    for column in ("value", "warn", "act", "lower", "upper"):
        if column in rows:
            rows[column] = pd.to_numeric(rows[column], errors="coerce").astype(float)
    return rows


def _dimension_labels(rows: pd.DataFrame) -> pd.Series:
    """Source, model name and model version of each row, for those that vary ('' when none does)."""
    varying = [c for c in _DIMENSIONS if c in rows and rows[c].astype(str).nunique() > 1]
    if not varying:
        return pd.Series("", index=rows.index)
    parts = rows[varying].astype(str)
    if "model_version" in parts:
        parts["model_version"] = "v" + parts["model_version"]
    return parts.agg(", ".join, axis=1)


def _with_series(rows: pd.DataFrame, base: pd.Series) -> pd.DataFrame:
    """Adds ``series``: the base name, plus ``[source, model, version]`` where those vary."""
    dimensions = _dimension_labels(rows)
    suffix = dimensions.map(lambda text: f" [{text}]" if text else "")
    return rows.assign(series=base.astype(str) + suffix)


def _wide(rows: pd.DataFrame, column: str = "value") -> pd.DataFrame:
    """One row per series, one column per window_start in time order; the later duplicate wins."""
    latest = rows.drop_duplicates(["series", "window_start"], keep="last")
    return latest.pivot(index="series", columns="window_start", values=column).sort_index(axis=1)


def _latest(wide: pd.DataFrame) -> pd.Series:
    """Each series' value in its last window with a value (NaN when it never has one)."""
    return wide.ffill(axis=1).iloc[:, -1]


def _ranked(rows: pd.DataFrame) -> list[str]:
    """Series by latest status (act, warn, other), then latest value, highest first; ties by name."""
    value = _latest(_wide(rows, "value"))
    if "status" in rows:
        severity = _latest(_wide(rows, "status").map(lambda s: _SEVERITY.get(s, 0) if isinstance(s, str) else np.nan))
    else:
        severity = pd.Series(np.nan, index=value.index)

    def key(series: str) -> tuple[float, float, str]:
        level, latest = severity.get(series, np.nan), value.get(series, np.nan)
        return (-level if level == level else 0.0, -latest if latest == latest else math.inf, series)

    return sorted(value.index, key=key)


def _untrusted(rows: pd.DataFrame) -> pd.Series:
    """Rows flagged untrusted, by ``trusted`` False or status 'untrusted' (a null ``trusted`` is not a flag)."""
    flags = pd.Series(False, index=rows.index)
    if "trusted" in rows:
        flags |= rows["trusted"].eq(False)
    if "status" in rows:
        flags |= rows["status"].eq("untrusted")
    return flags


# ---------------------------------------------------------------- drawing helpers


def _no_data(title: str, reason: str = NO_DATA) -> Figure:
    """A figure with only its title and the reason there is nothing to draw."""
    figure, axes = titled_figure(title, size=(7.0, 3.0))
    _empty_panel(axes, reason)
    return figure


def _empty_panel(axes: Axes, reason: str = NO_DATA) -> None:
    """Writes ``reason`` in the middle of an axes without data and hides its frame."""
    axes.text(0.5, 0.5, reason, ha="center", va="center", transform=axes.transAxes, color="grey", fontsize=12)
    axes.set_axis_off()


def _date_axis(axes: Axes, windows: Sequence[Any]) -> None:
    """Day labels on a time x axis: a tick per window when they are few, slanted so they do not overlap."""
    if len(windows) <= _WINDOW_TICKS:
        # the automatic locator puts ticks between weekly windows (every other day)
        axes.set_xticks(pd.to_datetime(pd.Series(windows)).drop_duplicates().sort_values().to_numpy())
    axes.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
    axes.tick_params(axis="x", labelrotation=30)
    axes.set_xlabel("window start")


def _threshold_lines(axes: Axes, rows: pd.DataFrame) -> None:
    """Dashed lines at each distinct warn and act value of ``rows``, naming the metrics when they differ."""
    several = rows["metric"].nunique() > 1
    for level, color in (("warn", "tab:orange"), ("act", "tab:red")):
        for value, metrics in rows.dropna(subset=[level]).groupby(level)["metric"].unique().items():
            label = f"{level} {value:g}" + (f" ({', '.join(sorted(metrics))})" if several else "")
            axes.axhline(value, linestyle="--", linewidth=1, color=color, label=label)


def _lines(axes: Axes, rows: pd.DataFrame, order: Sequence[str] | None = None) -> None:
    """One line per series of ``rows`` over window_start (in ``order``), then their threshold lines."""
    values = _wide(rows)
    x = values.columns.to_numpy()
    for series in values.index if order is None else order:
        axes.plot(x, values.loc[series].to_numpy(float), marker="o", label=series)
    _threshold_lines(axes, rows[rows["series"].isin(values.index if order is None else order)])
    axes.legend(fontsize="small", loc="best")
    _date_axis(axes, x)


def _heatmap(figure: Figure, axes: Axes, values: pd.DataFrame, acts: pd.DataFrame) -> None:
    """Cells coloured by value (grey when missing), outlined where the value reaches the row's act level."""
    data, act = values.to_numpy(float), acts.to_numpy(float)
    known, levels = data[~np.isnan(data)], np.unique(act[~np.isnan(act)])
    # Twice the act level keeps the breaching cells distinct from each other without one huge
    # PSI washing every other cell out to the palest colour.
    top = 2 * levels.max() if levels.size else (known.max() if known.size and known.max() > 0 else 1.0)
    palette = matplotlib.colormaps["YlOrRd"].with_extremes(bad="lightgrey")
    image = axes.imshow(
        np.ma.masked_invalid(data), aspect="auto", cmap=palette, vmin=0, vmax=top, interpolation="nearest"
    )
    extend = "max" if known.size and known.max() > top else "neither"
    colorbar = figure.colorbar(image, ax=axes, extend=extend, label="value (dashed: act)")
    for level in levels:
        colorbar.ax.axhline(level, color="black", linestyle="--", linewidth=1)
    with np.errstate(invalid="ignore"):
        breached = data >= act
    for row, column in zip(*np.nonzero(breached)):
        axes.add_patch(Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2))
    if data.size <= _ANNOTATE_CELLS:
        for (row, column), value in np.ndenumerate(data):
            if not np.isnan(value):
                dark = value > 0.6 * top  # black text is unreadable on the darkest reds
                axes.text(
                    column,
                    row,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if dark else "black",
                )
    step = max(1, math.ceil(values.shape[1] / _WINDOW_TICKS))
    axes.set_xticks(range(0, values.shape[1], step), [f"{d:%Y-%m-%d}" for d in values.columns[::step]], rotation=30)
    axes.set_yticks(range(values.shape[0]), list(values.index))
    axes.set_xlabel("window start")
    axes.set_title("Main drift metric per window (PSI numeric, JS distance categorical); outlined: at or above act")


# ---------------------------------------------------------------- figures


def drift_over_time(drift: pd.DataFrame, *, source: str | None = None, top: int = 8) -> Figure:
    """Heatmap of each feature's main drift metric per window, and lines of the ``top`` features.

    Rows: metric 'psi' or 'js_distance', slice 'all', a feature other than '__prediction__'
    (optionally of one ``source``). Heatmap rows and lines are ranked by latest status (act, warn,
    ok), then latest value, highest first.
    """
    if top < 1:
        raise ValueError(f"drift_over_time: top must be at least 1, got {top}")
    if source is not None and source not in SCORING_SOURCES:
        raise ValueError(f"drift_over_time: source must be one of {SCORING_SOURCES} or None, got {source!r}")
    title = "Feature drift" + (f" ({source})" if source else "")
    rows = _slice_all(drift, SIGNAL_COLUMNS + (("source",) if source else ()), "drift", "drift_over_time")
    rows = rows[rows["metric"].isin(MAIN_METRICS) & rows["feature"].notna() & (rows["feature"] != PREDICTION_FEATURE)]
    if source is not None:
        rows = rows[rows["source"] == source]
    if rows.empty:
        return _no_data(title)
    rows = _with_series(rows, rows["feature"])
    order = _ranked(rows)
    shown = order[:top]
    figure = Figure(figsize=(10.0, 0.35 * len(order) + 6.5), layout="constrained")
    heat, lines = figure.subplots(2, 1, height_ratios=[max(0.35 * len(order), 1.5), 4.0])
    _heatmap(figure, heat, _wide(rows).loc[order], _wide(rows, "act").loc[order])
    _lines(lines, rows, shown)
    lines.set_title(f"Top {len(shown)} of {len(order)} features by latest status and value")
    lines.set_ylabel("PSI / JS distance")
    figure.suptitle(title)
    return figure


def score_distribution(drift: pd.DataFrame) -> Figure:
    """Prediction drift per window: PSI of the scores, and the positive rate and its change, with warn/act lines."""
    title = "Prediction drift"
    rows = _slice_all(drift, SIGNAL_COLUMNS, "drift", "score_distribution")
    rows = rows[(rows["feature"] == PREDICTION_FEATURE) & rows["metric"].isin(("psi", *PREDICTION_METRICS))]
    if rows.empty:
        return _no_data(title)
    rows = _with_series(rows, rows["metric"])
    figure = Figure(figsize=(9.0, 7.5), layout="constrained")
    panels = figure.subplots(2, 1)
    for axes, metrics, panel, ylabel in (
        (panels[0], ("psi",), "PSI of the score distribution against the baseline", "PSI"),
        (panels[1], PREDICTION_METRICS, "Positive rate and its change against the baseline", "share of scores"),
    ):
        axes.set_title(panel)
        part = rows[rows["metric"].isin(metrics)]
        if part.empty:
            _empty_panel(axes)
            continue
        _lines(axes, part)
        axes.set_ylabel(ylabel)
    figure.suptitle(title)
    return figure


def performance_over_time(performance: pd.DataFrame) -> Figure:
    """ROC AUC per window: realized with its lower/upper band, estimated dashed; untrusted points hollow.

    Rows: slice 'all', basis 'realized' with metric 'roc_auc' and basis 'estimated' with metric
    'estimated_roc_auc' (as the monitoring pipeline names it) or 'roc_auc'. Filled markers are trusted
    points; hollow markers are points with ``trusted`` False or status 'untrusted' (too few positives
    or negatives).
    """
    title = "ROC AUC per window"
    rows = _slice_all(performance, (*SIGNAL_COLUMNS, "basis"), "performance", "performance_over_time")
    realized = (rows["metric"] == "roc_auc") & (rows["basis"] == "realized")
    estimated = rows["metric"].isin(("roc_auc", "estimated_roc_auc")) & (rows["basis"] == "estimated")
    rows = rows[realized | estimated].assign(metric="roc_auc")  # one metric, two bases: one set of lines
    if rows.empty:
        return _no_data(title)
    rows = rows.assign(series=_dimension_labels(rows), untrusted=_untrusted(rows))
    figure, axes = titled_figure(title, size=(9.0, 5.0))
    hollow_labelled = False
    for index, (series, group) in enumerate(rows.groupby("series", sort=True)):
        color, suffix = f"C{index % 10}", f" [{series}]" if series else ""
        for basis, linestyle, marker in (("realized", "-", "o"), ("estimated", "--", "s")):
            points = (
                group[group["basis"] == basis].drop_duplicates("window_start", keep="last").sort_values("window_start")
            )
            if points.empty:
                continue
            x = points["window_start"].to_numpy()
            axes.plot(x, points["value"].to_numpy(), linestyle=linestyle, color=color, label=f"{basis}{suffix}")
            if (
                basis == "realized"
                and {"lower", "upper"} <= set(points.columns)
                and points[["lower", "upper"]].notna().any().all()
            ):
                axes.fill_between(
                    x,
                    points["lower"].to_numpy(),
                    points["upper"].to_numpy(),
                    color=color,
                    alpha=0.2,
                    label=f"realized lower-upper{suffix}",
                )
            trusted, untrusted = points[~points["untrusted"]], points[points["untrusted"]]
            if not trusted.empty:
                axes.plot(
                    trusted["window_start"].to_numpy(),
                    trusted["value"].to_numpy(),
                    linestyle="none",
                    marker=marker,
                    color=color,
                    label="_nolegend_",
                )
            if not untrusted.empty:
                axes.plot(
                    untrusted["window_start"].to_numpy(),
                    untrusted["value"].to_numpy(),
                    linestyle="none",
                    marker=marker,
                    markerfacecolor="none",
                    markeredgecolor=color,
                    label="_nolegend_" if hollow_labelled else "untrusted (hollow)",
                )
                hollow_labelled = True
    _threshold_lines(axes, rows)
    axes.set_ylabel("ROC AUC")
    axes.legend(fontsize="small", loc="best")
    _date_axis(axes, rows["window_start"].unique())
    return figure


def quality_over_time(quality: pd.DataFrame, *, top: int = 8) -> Figure:
    """One panel per data-quality metric (slice 'all'): a line per feature over windows, with warn/act lines.

    A null feature (a whole-table metric) is labelled '(table)'. Each panel shows at most ``top``
    series, ranked by latest status (act, warn, ok), then latest value, highest first.
    """
    if top < 1:
        raise ValueError(f"quality_over_time: top must be at least 1, got {top}")
    title = "Data quality"
    rows = _slice_all(quality, SIGNAL_COLUMNS, "quality", "quality_over_time")
    if rows.empty:
        return _no_data(title)
    rows = _with_series(rows, rows["feature"].fillna("(table)"))
    metrics = sorted(rows["metric"].dropna().unique())
    columns = min(2, len(metrics))
    height = math.ceil(len(metrics) / columns)
    figure = Figure(figsize=(6.5 * columns, 3.8 * height + 0.5), layout="constrained")
    panels = figure.subplots(height, columns, squeeze=False).ravel()
    for axes, metric in zip(panels, metrics):
        part = rows[rows["metric"] == metric]
        order = _ranked(part)
        shown = order[:top]
        _lines(axes, part, shown)
        axes.set_title(metric if len(shown) == len(order) else f"{metric} (top {len(shown)} of {len(order)})")
    for axes in panels[len(metrics) :]:
        figure.delaxes(axes)
    figure.suptitle(title)
    return figure


# ---------------------------------------------------------------- HTML page


def _day(value: Any) -> str:
    """A date as YYYY-MM-DD ('' when missing)."""
    return "" if value is None or pd.isna(value) else pd.Timestamp(value).strftime("%Y-%m-%d")


def _png_base64(figure: Figure) -> str:
    """The figure as a base64-encoded PNG."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _status_counts(statuses: pd.Series) -> str:
    """'2 act, 1 warn, 5 ok': known statuses in severity order, then any others."""
    counts = statuses.fillna("null").astype(str).value_counts()
    ordered = [s for s in STATUS_ORDER if s in counts] + sorted(s for s in counts.index if s not in STATUS_ORDER)
    return ", ".join(f"{counts[s]} {s}" for s in ordered)


def _table_summary(name: str, frame: pd.DataFrame) -> str:
    """'<table>: N rows, W windows (first to last); latest window <day>: <status counts> (all slices)'."""
    if frame.empty:
        return f"{name}: no rows"
    _require(frame, ("window_start", "status"), name, "monitoring_report")
    starts = pd.to_datetime(frame["window_start"])
    first, last = starts.min(), starts.max()
    return (
        f"{name}: {len(frame)} rows, {starts.nunique()} windows ({_day(first)} to {_day(last)}); "
        f"latest window {_day(last)}: {_status_counts(frame.loc[starts == last, 'status'])} (all slices)"
    )


def _actions_summary(actions: pd.DataFrame) -> str:
    """'actions: N fired (k to_execute, …)' or 'actions: none fired'."""
    if actions.empty:
        return "actions: none fired"
    counts = actions["status"].fillna("null").astype(str).value_counts()
    return f"actions: {len(actions)} fired (" + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ")"


def _evidence_html(evidence: Any) -> str:
    """The evidence JSON pretty-printed in a collapsible block (as given when it is not JSON)."""
    if evidence is None or (isinstance(evidence, float) and math.isnan(evidence)):
        return ""
    try:
        parsed = json.loads(evidence) if isinstance(evidence, str) else evidence
        text = json.dumps(parsed, indent=1, default=str)
        size = f"{len(parsed)} window(s)" if isinstance(parsed, (list, dict)) else "evidence"
    except (TypeError, ValueError):
        text, size = str(evidence), "evidence"
    return f"<details><summary>{html.escape(size)}</summary><pre>{html.escape(text)}</pre></details>"


def _actions_html(actions: pd.DataFrame) -> str:
    """The actions as an HTML table, one row per action with its evidence."""
    if actions.empty:
        return "<p>No action fired.</p>"
    extra = [c for c in ("blocked_reason", "description") if c in actions.columns]
    header = [
        "rule",
        "action",
        "model",
        "window",
        "breached",
        "mode",
        "status",
        *extra,
        "evidence",
        "action_id",
    ]
    body = []
    for row in actions.to_dict("records"):
        cells = [
            html.escape(str(row["rule"])),
            html.escape(str(row["action"])),
            html.escape(f"{row['model_name']} v{row['model_version']}"),
            html.escape(f"{_day(row['window_start'])} to {_day(row['window_end'])}"),
            html.escape(f"{row['breached_windows']} of {row['considered_windows']}"),
            html.escape(str(row["mode"])),
            html.escape(str(row["status"])),
            *(html.escape("" if pd.isna(row[c]) else str(row[c])) for c in extra),
            _evidence_html(row["evidence"]),
            f"<code>{html.escape(str(row['action_id']))}</code>",
        ]
        body.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    head = "<tr>" + "".join(f"<th>{html.escape(name)}</th>" for name in header) + "</tr>"
    return f"<table>\n<thead>{head}</thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"


_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
pre { margin: 0; font-size: 0.85em; }
figure { margin: 1em 0; }
img { max-width: 100%; }
"""


def monitoring_report(
    drift: pd.DataFrame,
    performance: pd.DataFrame,
    quality: pd.DataFrame,
    actions: pd.DataFrame,
    title: str,
) -> dict[str, Any]:
    """The run's figures and one self-contained HTML page: ``{"figures": {name: Figure}, "html": str}``.

    The page holds a summary line per table (rows, windows, statuses of the latest window), the
    actions with their evidence, and every figure as an embedded base64 PNG (no external files).
    """
    if not actions.empty:
        _require(actions, ACTION_COLUMNS, "actions", "monitoring_report")
    figures = {
        "drift_over_time": drift_over_time(drift),
        "score_distribution": score_distribution(drift),
        "performance_over_time": performance_over_time(performance),
        "quality_over_time": quality_over_time(quality),
    }
    summaries = [
        _table_summary("drift_metrics", drift),
        _table_summary("performance_metrics", performance),
        _table_summary("data_quality", quality),
        _actions_summary(actions),
    ]
    images = "\n".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,{_png_base64(figure)}">'
        f"<figcaption>{name}</figcaption></figure>"
        for name, figure in figures.items()
    )
    page = "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            f'<head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_STYLE}</style></head>',
            "<body>",
            f"<h1>{html.escape(title)}</h1>",
            "<h2>Summary</h2>",
            "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in summaries) + "</ul>",
            "<h2>Actions</h2>",
            _actions_html(actions),
            "<h2>Figures</h2>",
            images,
            "</body>",
            "</html>",
        ]
    )
    return {"figures": figures, "html": page}


def run_summary(
    drift: pd.DataFrame, performance: pd.DataFrame, quality: pd.DataFrame, actions: pd.DataFrame
) -> dict[str, float]:
    """A run's figures: windows, acting signals per table, actions fired and executed, and the latest
    realized ROC AUC on slice 'all' when there is one."""
    summary = {
        "monitoring.windows": drift["window_start"].nunique() if len(drift) else 0,
        "monitoring.drift.act": int((drift["status"] == "act").sum()),
        "monitoring.performance.act": int((performance["status"] == "act").sum()),
        "monitoring.quality.act": int((quality["status"] == "act").sum()),
        "monitoring.actions.fired": len(actions),
        "monitoring.actions.executed": int((actions["status"] == "executed").sum()),
    }
    latest = performance[
        (performance["metric"] == "roc_auc") & (performance["slice"] == "all") & performance["value"].notna()
    ]
    if len(latest):
        summary["monitoring.latest_realized_roc_auc"] = float(latest.sort_values("window_start")["value"].iloc[-1])
    return summary
