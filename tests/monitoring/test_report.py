"""Monitoring report figures and HTML page from tiny hand-made signal frames.

Three weekly windows W1 = 2026-01-05, W2 = 2026-01-12, W3 = 2026-01-19 throughout. What each chart
must draw (cell values, line points, threshold lines, ranking) is worked out by hand next to each
frame; every figure is also rendered to PNG so that layout errors surface.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from lakehouse_ml.monitoring.report import (
    FIGURES,
    drift_over_time,
    monitoring_report,
    performance_over_time,
    quality_over_time,
    score_distribution,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
W1, W2, W3 = dt.date(2026, 1, 5), dt.date(2026, 1, 12), dt.date(2026, 1, 19)
WINDOWS = np.array([W1, W2, W3], dtype="datetime64[ns]")


@pytest.fixture(autouse=True)
def close_figures():
    """The report builds figures without pyplot; closing anyway keeps a regression from leaking memory."""
    yield
    plt.close("all")


def signal(window, feature, metric, value, warn=None, act=None, status="ok", **columns) -> dict:
    """One row of the long signal schema (window_end one week later)."""
    return {
        "window_start": window,
        "window_end": window + dt.timedelta(days=7),
        "source": "batch",
        "model_name": "dev.ml.churn_classifier",
        "model_version": "3",
        "slice": "all",
        "slice_value": "all",
        "feature": feature,
        "metric": metric,
        "value": value,
        "warn": warn,
        "act": act,
        "status": status,
        "n_rows": 100,
        "details": None,
        **columns,
    }


def render(figure: Figure) -> bytes:
    """Draws the figure to PNG (fills in tick labels, surfaces layout errors)."""
    assert isinstance(figure, Figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    assert buffer.getvalue().startswith(PNG_MAGIC)
    return buffer.getvalue()


def lines_by_label(axes) -> dict:
    return {line.get_label(): line for line in axes.lines}


def says_no_data(figure: Figure) -> bool:
    return any(text.get_text() == "no data" for axes in figure.axes for text in axes.texts)


# ---------------------------------------------------------------- feature drift

PSI = {"warn": 0.1, "act": 0.25}
JS = {"warn": 0.1, "act": 0.2}


def drift_frame() -> pd.DataFrame:
    """age (PSI) .05 ok, .12 warn, .30 act; tenure (PSI) .02, .03, .01 ok; country (JS) .05 ok,
    .20 act (equal to act counts), .15 warn. Latest status then value: age (act), country (warn), tenure.
    Rows that must be ignored: another metric, another slice, the prediction, a whole-model metric."""
    rows = [
        *(
            signal(w, "age", "psi", v, **PSI, status=s)
            for w, v, s in [(W1, 0.05, "ok"), (W2, 0.12, "warn"), (W3, 0.30, "act")]
        ),
        *(signal(w, "tenure", "psi", v, **PSI) for w, v in [(W1, 0.02), (W2, 0.03), (W3, 0.01)]),
        *(
            signal(w, "country", "js_distance", v, **JS, status=s)
            for w, v, s in [(W1, 0.05, "ok"), (W2, 0.20, "act"), (W3, 0.15, "warn")]
        ),
        signal(W3, "age", "wasserstein_norm", 0.9),
        signal(W3, "age", "psi", 0.9, **PSI, status="act", slice="country", slice_value="DE"),
        signal(W3, "__prediction__", "psi", 0.9, **PSI, status="act"),
        signal(W3, None, "n_rows", 100.0),
    ]
    return pd.DataFrame(rows)


def test_drift_heatmap_cells_ranking_and_act_outlines():
    figure = drift_over_time(drift_frame())
    render(figure)
    heat, _lines, colorbar = figure.axes
    assert [label.get_text() for label in heat.get_yticklabels()] == ["age", "country", "tenure"]
    assert [label.get_text() for label in heat.get_xticklabels()] == ["2026-01-05", "2026-01-12", "2026-01-19"]
    np.testing.assert_allclose(heat.images[0].get_array(), [[0.05, 0.12, 0.30], [0.05, 0.20, 0.15], [0.02, 0.03, 0.01]])
    # outlined cells: age in W3 (row 0, column 2) and country in W2 (row 1, column 1, 0.20 >= 0.20)
    outlines = sorted(patch.get_xy() for patch in heat.patches if isinstance(patch, Rectangle))
    assert outlines == [(0.5, 0.5), (1.5, -0.5)]
    # colour scale 0 .. 2 x the largest act (0.5), act levels 0.2 and 0.25 dashed on the colour bar
    assert heat.images[0].norm.vmin == 0 and heat.images[0].norm.vmax == pytest.approx(0.5)
    assert sorted(line.get_ydata()[0] for line in colorbar.lines) == [0.2, 0.25]
    assert "0.30" in [text.get_text() for text in heat.texts]


def test_drift_lines_of_top_features_with_warn_and_act_lines():
    """top=2 keeps age and country; both metrics warn at 0.1 (one line), act at 0.2 (JS) and 0.25 (PSI)."""
    figure = drift_over_time(drift_frame(), top=2)
    render(figure)
    lines = lines_by_label(figure.axes[1])
    assert set(lines) == {"age", "country", "warn 0.1 (js_distance, psi)", "act 0.2 (js_distance)", "act 0.25 (psi)"}
    np.testing.assert_allclose(lines["age"].get_ydata(), [0.05, 0.12, 0.30])
    assert (lines["age"].get_xdata() == WINDOWS).all()
    assert list(lines["act 0.25 (psi)"].get_ydata()) == [0.25, 0.25]
    assert list(lines["act 0.2 (js_distance)"].get_ydata()) == [0.2, 0.2]
    assert lines["act 0.25 (psi)"].get_linestyle() == "--"
    assert figure.axes[1].get_title() == "Top 2 of 3 features by latest status and value"
    assert figure.axes[1].get_ylabel() == "PSI / JS distance"


def test_drift_status_ranks_before_value():
    """spend PSI 0.22 is only warn (act 0.25); country JS 0.21 is act (act 0.2): country ranks first."""
    frame = pd.DataFrame(
        [
            signal(W1, "spend", "psi", 0.22, **PSI, status="warn"),
            signal(W1, "country", "js_distance", 0.21, **JS, status="act"),
        ]
    )
    figure = drift_over_time(frame, top=1)
    render(figure)
    assert [label.get_text() for label in figure.axes[0].get_yticklabels()] == ["country", "spend"]
    assert "country" in lines_by_label(figure.axes[1]) and "spend" not in lines_by_label(figure.axes[1])


def test_drift_sources_split_series_and_filter():
    """An online age row (0.5 in W3) next to the batch rows: without a source filter the series are
    labelled by source; with source='online' only that row remains, labelled plainly."""
    frame = pd.concat(
        [drift_frame(), pd.DataFrame([signal(W3, "age", "psi", 0.5, **PSI, status="act", source="online")])]
    )
    figure = drift_over_time(frame)
    render(figure)
    assert [label.get_text() for label in figure.axes[0].get_yticklabels()] == [
        "age [online]",
        "age [batch]",
        "country [batch]",
        "tenure [batch]",
    ]
    online = drift_over_time(frame, source="online")
    render(online)
    assert [label.get_text() for label in online.axes[0].get_yticklabels()] == ["age"]
    np.testing.assert_allclose(online.axes[0].images[0].get_array(), [[0.5]])
    assert online.get_suptitle() == "Feature drift (online)"


def test_drift_later_duplicate_wins():
    """A re-run appended a second age row for W3 (0.40): the chart shows the later one."""
    frame = pd.concat([drift_frame(), pd.DataFrame([signal(W3, "age", "psi", 0.40, **PSI, status="act")])])
    figure = drift_over_time(frame)
    assert figure.axes[0].images[0].get_array()[0, 2] == pytest.approx(0.40)


@pytest.mark.parametrize(
    "frame",
    [
        pd.DataFrame(),
        pd.DataFrame(columns=list(signal(W1, "a", "psi", 0.0))),
        pd.DataFrame([signal(W1, "age", "psi", 0.3, **PSI, slice="country", slice_value="DE")]),
    ],
    ids=["no columns", "no rows", "no slice all"],
)
def test_empty_frames_give_no_data_figures(frame):
    for figure in (drift_over_time(frame), score_distribution(frame), quality_over_time(frame)):
        render(figure)
        assert says_no_data(figure)
    performance = frame.assign(basis="realized") if len(frame.columns) else frame
    figure = performance_over_time(performance)
    render(figure)
    assert says_no_data(figure)


def test_drift_source_not_present_says_no_data():
    assert says_no_data(drift_over_time(drift_frame(), source="online"))


def test_argument_and_column_errors_name_the_field():
    with pytest.raises(ValueError, match="source must be one of .*'onlne'"):
        drift_over_time(drift_frame(), source="onlne")
    with pytest.raises(ValueError, match="top must be at least 1, got 0"):
        drift_over_time(drift_frame(), top=0)
    with pytest.raises(ValueError, match=r"drift frame has no column\(s\) \['act'\]"):
        drift_over_time(drift_frame().drop(columns="act"))
    with pytest.raises(ValueError, match=r"performance frame has no column\(s\) \['basis'\]"):
        performance_over_time(drift_frame())


# ---------------------------------------------------------------- prediction drift


def prediction_frame() -> pd.DataFrame:
    """Score PSI .02, .15, .30 (warn .1, act .25); positive rate .20, .22, .30 (no thresholds);
    its change .00, .02, .10 (warn .05, act .10). A feature row that must be ignored."""
    rows = [
        *(
            signal(w, "__prediction__", "psi", v, **PSI, status=s)
            for w, v, s in [(W1, 0.02, "ok"), (W2, 0.15, "warn"), (W3, 0.30, "act")]
        ),
        *(signal(w, "__prediction__", "positive_rate", v) for w, v in zip((W1, W2, W3), (0.20, 0.22, 0.30))),
        *(
            signal(w, "__prediction__", "positive_rate_change", v, warn=0.05, act=0.10, status=s)
            for w, v, s in [(W1, 0.0, "ok"), (W2, 0.02, "ok"), (W3, 0.10, "act")]
        ),
        signal(W3, "age", "psi", 0.9, **PSI, status="act"),
    ]
    return pd.DataFrame(rows)


def test_score_distribution_panels():
    figure = score_distribution(prediction_frame())
    render(figure)
    psi_panel, rate_panel = figure.axes
    psi_lines = lines_by_label(psi_panel)
    assert set(psi_lines) == {"psi", "warn 0.1", "act 0.25"}
    np.testing.assert_allclose(psi_lines["psi"].get_ydata(), [0.02, 0.15, 0.30])
    assert list(psi_lines["act 0.25"].get_ydata()) == [0.25, 0.25]
    rate_lines = lines_by_label(rate_panel)
    assert set(rate_lines) == {
        "positive_rate",
        "positive_rate_change",
        "warn 0.05 (positive_rate_change)",
        "act 0.1 (positive_rate_change)",
    }
    np.testing.assert_allclose(rate_lines["positive_rate"].get_ydata(), [0.20, 0.22, 0.30])
    assert list(rate_lines["act 0.1 (positive_rate_change)"].get_ydata()) == [0.1, 0.1]
    assert psi_panel.get_title() == "PSI of the score distribution against the baseline"


def test_score_distribution_without_positive_rate_rows():
    frame = prediction_frame()
    figure = score_distribution(frame[frame["metric"] == "psi"])
    render(figure)
    assert len(figure.axes[0].lines) == 3
    assert [text.get_text() for text in figure.axes[1].texts] == ["no data"]


# ---------------------------------------------------------------- performance


def performance_frame() -> pd.DataFrame:
    """Realized AUC .80 [.75, .85], .78 [.70, .86], .70 [.55, .85] (W3 untrusted: few labels); estimated
    .79, .77, .72 and .71 in W4 (no labels yet). Thresholds warn .75, act .70 (low is bad).
    Ignored: a pr_auc row and a slice row."""
    w4 = W3 + dt.timedelta(days=7)
    auc = {"warn": 0.75, "act": 0.70}
    realized = [(W1, 0.80, 0.75, 0.85, True), (W2, 0.78, 0.70, 0.86, True), (W3, 0.70, 0.55, 0.85, False)]
    estimated = [(W1, 0.79), (W2, 0.77), (W3, 0.72), (w4, 0.71)]
    rows = [
        *(
            signal(
                w,
                None,
                "roc_auc",
                v,
                **auc,
                basis="realized",
                lower=lo,
                upper=up,
                trusted=t,
                status="ok" if t else "untrusted",
            )
            for w, v, lo, up, t in realized
        ),
        *(
            signal(w, None, "estimated_roc_auc", v, **auc, basis="estimated", lower=None, upper=None, trusted=True)
            for w, v in estimated
        ),
        signal(W1, None, "pr_auc", 0.4, basis="realized", lower=None, upper=None, trusted=True),
        signal(
            W1,
            None,
            "roc_auc",
            0.5,
            **auc,
            basis="realized",
            lower=0.4,
            upper=0.6,
            trusted=True,
            slice="country",
            slice_value="DE",
        ),
    ]
    return pd.DataFrame(rows)


def test_performance_band_estimate_and_hollow_untrusted_points():
    figure = performance_over_time(performance_frame())
    render(figure)
    (axes,) = figure.axes
    assert axes.get_ylabel() == "ROC AUC"
    lines = lines_by_label(axes)
    assert {"realized", "estimated", "untrusted (hollow)", "warn 0.75", "act 0.7"} <= set(lines)
    np.testing.assert_allclose(lines["realized"].get_ydata(), [0.80, 0.78, 0.70])
    np.testing.assert_allclose(lines["estimated"].get_ydata(), [0.79, 0.77, 0.72, 0.71])
    assert lines["estimated"].get_linestyle() == "--" and lines["realized"].get_linestyle() == "-"
    assert list(lines["act 0.7"].get_ydata()) == [0.7, 0.7]
    # the hollow marker is the untrusted W3 realized point only
    hollow = [line for line in axes.lines if line.get_markerfacecolor() == "none"]
    assert len(hollow) == 1 and list(hollow[0].get_ydata()) == [0.70]
    filled = [line for line in axes.lines if line.get_linestyle() == "None" and line.get_markerfacecolor() != "none"]
    assert sorted(len(line.get_ydata()) for line in filled) == [2, 4]  # realized W1, W2; estimated W1..W4
    # the band spans lower .55 .. upper .86 and is the only filled area
    (band,) = axes.collections
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(0.55) and ys.max() == pytest.approx(0.86)


def test_performance_series_per_model_version():
    """A challenger (v4) next to the champion (v3): each version gets its own realized/estimated lines."""
    frame = performance_frame()
    frame = pd.concat([frame, frame.assign(model_version="4", value=frame["value"] - 0.1)])
    figure = performance_over_time(frame)
    render(figure)
    labels = set(lines_by_label(figure.axes[0]))
    assert {"realized [v3]", "realized [v4]", "estimated [v3]", "estimated [v4]"} <= labels
    np.testing.assert_allclose(lines_by_label(figure.axes[0])["realized [v4]"].get_ydata(), [0.70, 0.68, 0.60])


# ---------------------------------------------------------------- data quality


def quality_frame() -> pd.DataFrame:
    """null_share: email .01, .02, .30 (warn .05, act .10), age 0, 0, 0; row_count (whole table)
    1000, 1100, 400 without thresholds; duplicate_share .0, .0, .01."""
    share = {"warn": 0.05, "act": 0.10}
    rows = [
        *(
            signal(w, "email", "null_share", v, **share, status=s)
            for w, v, s in [(W1, 0.01, "ok"), (W2, 0.02, "ok"), (W3, 0.30, "act")]
        ),
        *(signal(w, "age", "null_share", 0.0, **share) for w in (W1, W2, W3)),
        *(signal(w, None, "row_count", v) for w, v in zip((W1, W2, W3), (1000.0, 1100.0, 400.0))),
        *(signal(w, None, "duplicate_share", v) for w, v in zip((W1, W2, W3), (0.0, 0.0, 0.01))),
    ]
    return pd.DataFrame(rows)


def test_quality_one_panel_per_metric():
    """Three metrics in a 2 x 2 grid: the fourth, unused axes is removed."""
    figure = quality_over_time(quality_frame())
    render(figure)
    assert [axes.get_title() for axes in figure.axes] == ["duplicate_share", "null_share", "row_count"]
    null_share = lines_by_label(figure.axes[1])
    assert set(null_share) == {"email", "age", "warn 0.05", "act 0.1"}
    np.testing.assert_allclose(null_share["email"].get_ydata(), [0.01, 0.02, 0.30])
    assert list(null_share["act 0.1"].get_ydata()) == [0.1, 0.1]
    row_count = lines_by_label(figure.axes[2])
    assert set(row_count) == {"(table)"}
    np.testing.assert_allclose(row_count["(table)"].get_ydata(), [1000, 1100, 400])


def test_quality_top_per_panel():
    figure = quality_over_time(quality_frame(), top=1)
    assert figure.axes[1].get_title() == "null_share (top 1 of 2)"
    assert set(lines_by_label(figure.axes[1])) == {"email", "warn 0.05", "act 0.1"}


# ---------------------------------------------------------------- the HTML page


def actions_frame() -> pd.DataFrame:
    evidence = [
        {"window_start": "2026-01-19", "rows": [{"feature": "age", "metric": "psi", "value": 0.3, "act": 0.25}]}
    ]
    return pd.DataFrame(
        [
            {
                "action_id": "a1",
                "rule": "age_drift_retrain",
                "action": "retrain",
                "model_name": "dev.ml.churn_classifier",
                "model_version": "3",
                "window_start": W3,
                "window_end": W3 + dt.timedelta(days=7),
                "breached_windows": 2,
                "considered_windows": 3,
                "evidence": json.dumps(evidence),
                "mode": "execute",
                "status": "blocked",
                "blocked_reason": "retraining waits until the upstream data is fixed: rule email_nulls fired",
            },
            {
                "action_id": "a2",
                "rule": "email_nulls<fix>",
                "action": "fix_upstream",
                "model_name": "dev.ml.churn_classifier",
                "model_version": "3",
                "window_start": W3,
                "window_end": W3 + dt.timedelta(days=7),
                "breached_windows": 1,
                "considered_windows": 1,
                "evidence": "not json",
                "mode": "alert",
                "status": "alerted",
                "blocked_reason": None,
            },
        ]
    )


def test_monitoring_report_page():
    drift = pd.concat([drift_frame(), prediction_frame()], ignore_index=True)
    report = monitoring_report(drift, performance_frame(), quality_frame(), actions_frame(), title="Churn <weekly>")
    assert tuple(report["figures"]) == FIGURES
    page = report["html"]
    images = re.findall(r'<img alt="(\w+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', page)
    assert [name for name, _ in images] == list(FIGURES)
    assert all(base64.b64decode(data).startswith(PNG_MAGIC) for _, data in images)
    assert "<title>Churn &lt;weekly&gt;</title>" in page and "<h1>Churn &lt;weekly&gt;</h1>" in page
    # every action's rule (escaped), its evidence and why it is blocked
    assert "age_drift_retrain" in page and "email_nulls&lt;fix&gt;" in page
    assert "&quot;feature&quot;: &quot;age&quot;" in page and "not json" in page
    assert "rule email_nulls fired" in page and "2 of 3" in page and "2026-01-19 to 2026-01-26" in page
    # summary lines: drift has 13 + 10 rows over W1..W3. Its 11 W3 rows: act = age, age slice DE,
    # prediction 0.9 (drift_frame), score psi, positive_rate_change, age 0.9 (prediction_frame) = 6;
    # warn = country; ok = tenure, wasserstein, n_rows, positive_rate = 4. Actions: one alerted, one blocked.
    assert (
        "drift_metrics: 23 rows, 3 windows (2026-01-05 to 2026-01-19); latest window 2026-01-19: 6 act, 1 warn, 4 ok"
        in page
    )
    assert "actions: 2 fired (1 alerted, 1 blocked)" in page
    assert "data_quality: 12 rows, 3 windows" in page
    assert plt.get_fignums() == []  # nothing registered with pyplot


def test_monitoring_report_of_empty_frames():
    empty = pd.DataFrame()
    report = monitoring_report(empty, empty, empty, empty, title="Nothing yet")
    page = report["html"]
    assert all(says_no_data(figure) for figure in report["figures"].values())
    assert page.count("data:image/png;base64,") == 4
    assert "No action fired." in page and "drift_metrics: no rows" in page and "actions: none fired" in page


def test_monitoring_report_rejects_actions_without_rule():
    with pytest.raises(ValueError, match=r"actions frame has no column\(s\) \['rule'\]"):
        monitoring_report(pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), actions_frame().drop(columns="rule"), "t")
