"""End-to-end: the loop on data shaped like a real transaction export, by configuration only.

The export is generated here (like CDNOW's log: other column names, no order id, a date-only
time, blank-separated text, orders only) and delivered two ways: as daily folders over three
years, and as one file holding the whole history. Each runs `kedro run` in an environment of
its own with the simulator off. With `known_at: {event_time_plus: 1 day}` the history file makes
each purchase known when the daily feed would have delivered it, so both build the same
training set.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lakehouse_ml.datasets import PandasDeltaDataset
from tests.helpers import PROJECT_ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FIRST_DAY, DAYS, CUSTOMERS = date(2021, 1, 1), 3 * 365, 300
HEADER = " cust_no  order_day  n_items  revenue"
LOOP = """
simulate: {enabled: false}
training_set: {spine: {warmup_days: 90, every_days: 14, horizon_days: 60, active_lookback_days: 90}}
tuning:
  n_folds: 2
  test_cutoffs: 2
  gap_cutoffs: 4
  n_trials: 4
  n_jobs: 1
  pruner: {n_startup_trials: 2}
  search_space:
    random_forest: {n_estimators: {low: 10, high: 30}}
training: {min_slice_rows: 30, importance: {max_rows: 500, n_repeats: 1}}
evaluation:  # limits this small business can meet; the gates themselves are tested elsewhere
  floors: {roc_auc: 0.55, pr_auc: 0.2}
  ceilings: {log_loss: 0.8, calibration_error: 0.3}
  slices: {floors: {roc_auc: 0.5}}
  serving: {latency_budget_ms: {single_row: 2000, batch_100: 2000}}
inference: {max_rejected_rate: 0.5}
"""
SOURCE = """
ingest:
  sources:
    orders:
      column_mapping: {cust_no: customer_id, order_day: event_ts, n_items: items, revenue: amount}
      delimiter: whitespace
      timestamp_format: yyyyMMdd
      defaults: {currency: USD, discount: 0.0}
"""
OPTIONAL_SOURCES = "\n".join(
    f"""{source}_landing@spark:
  type: lakehouse_ml.datasets.LandingDataset
  path: ${{globals:landing_root}}/{source}
  filename_suffix: .txt
  dataset: {{type: lakehouse_ml.datasets.LandingFileDataset, file_format: csv}}
"""
    for source in ("orders", "customers", "sessions", "tickets")
)


def purchases(seed: int = 11) -> pd.DataFrame:
    """Customers who arrive over two years, buy every ~3 weeks while engaged, and lapse."""
    rng = np.random.default_rng(seed)
    rows = []
    for number in range(1, CUSTOMERS + 1):
        day = int(rng.integers(0, 2 * 365))
        last = day + int(rng.geometric(1 / 240))
        while day < min(last, DAYS - 1):
            rows.append(
                (
                    f"{number:05d}",
                    FIRST_DAY + timedelta(days=day),
                    int(rng.integers(1, 6)),
                    round(float(rng.gamma(2, 15)), 2),
                )
            )
            day += int(rng.geometric(1 / 21))
    return pd.DataFrame(rows, columns=["cust_no", "day", "n_items", "revenue"]).sort_values(["day", "cust_no"])


def _lines(frame: pd.DataFrame) -> str:
    body = "".join(f" {r.cust_no} {r.day:%Y%m%d}  {r.n_items}   {r.revenue:.2f}\r\n" for r in frame.itertuples())
    return f"{HEADER}\r\n{body}"


def project(root: Path, env: str, extra: str) -> Path:
    """A copy of the project with environment ``env``: only orders, blank-separated, the simulator off."""
    shutil.copy(PROJECT_ROOT / "pyproject.toml", root)
    shutil.copytree(PROJECT_ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("credentials*"))
    conf = root / "conf" / env
    (conf / "feature_tables").mkdir(parents=True)
    (conf / "globals.yml").write_text(f"landing_root: data/exports\nkedro_env: {env}\n")
    (conf / "catalog.yml").write_text(OPTIONAL_SOURCES)
    (conf / "parameters_loop.yml").write_text(LOOP)
    (conf / "parameters_ingest.yml").write_text(SOURCE + extra)
    (conf / "feature_tables" / "customer_profile.yml").write_text(
        "feature_tables:\n  customer_profile:\n    enabled: false\n"
    )
    (root / "src").mkdir()
    return root


def kedro_run(root: Path, env: str) -> str:
    variables = {**os.environ, "LAKEHOUSE_ML_ROOT": str(root), "KEDRO_DISABLE_TELEMETRY": "1", "COLUMNS": "200"}
    variables.pop("SPARK_REMOTE", None)
    result = subprocess.run(
        [str(Path(sys.executable).with_name("kedro")), "run", "--env", env],
        cwd=root,
        env=variables,
        capture_output=True,
        text=True,
        timeout=900,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    return " ".join(log.split())


def table(root: Path, name: str) -> pd.DataFrame:
    return PandasDeltaDataset(filepath=str(root / "data" / "lakehouse" / "dev" / name)).load()


@pytest.fixture(scope="module")
def daily(tmp_path_factory) -> tuple[Path, str]:
    """Three years of daily folders; each delivers the previous day's orders (an empty day: a header)."""
    root = project(
        tmp_path_factory.mktemp("daily"),
        "daily",
        "      event_id_from: {hash: [customer_id, event_ts, items, amount]}\n",
    )
    frame = purchases()
    for offset in range(1, DAYS + 1):
        delivered = FIRST_DAY + timedelta(days=offset)
        folder = root / "data" / "exports" / "orders" / delivered.isoformat()
        folder.mkdir(parents=True)
        (folder / "orders.txt").write_text(_lines(frame[frame["day"] == delivered - timedelta(days=1)]), newline="")
    return root, kedro_run(root, "daily")


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> tuple[Path, str]:
    """The same purchases as one file of history, delivered once, long after."""
    extra = "      event_id_from: line_in_file\n      known_at: {event_time_plus: 1 day}\n"
    root = project(tmp_path_factory.mktemp("history"), "history", extra)
    folder = root / "data" / "exports" / "orders" / "2025-06-30"
    folder.mkdir(parents=True)
    (folder / "history.txt").write_text(_lines(purchases()), newline="")
    return root, kedro_run(root, "history")


def test_daily_folders_over_three_years_run_the_whole_loop(daily):
    root, log = daily
    orders = purchases()
    audit = table(root, "monitoring/ingest_audit")
    assert len(audit) == DAYS and audit["bronze_rows"].sum() == len(orders)  # one audit row per file
    assert (
        len(table(root, "silver/orders")) == len(orders.drop_duplicates())
        and len(table(root, "quarantine/orders")) == 0
    )
    training_set = table(root, "ml/training_set")
    assert training_set["cutoff_ts"].nunique() > 60 and 0 < training_set["churned"].mean() < 1
    assert "are left out of the model: customer_activity__sessions_7d = 0.0" in log  # orders only
    assert "registry: dev.ml.churn_classifier@champion -> version 1" in log
    assert len(table(root, "ml/churn_predictions")) > 0


def test_one_history_file_known_by_event_time_builds_the_same_training_set(daily, history):
    daily_root, history_root = daily[0], history[0]
    assert len(table(history_root, "monitoring/ingest_audit")) == 1
    assert len(table(history_root, "silver/orders")) == len(purchases())  # repeated lines are orders too
    keys = ["customer_id", "cutoff_ts"]
    expected = table(daily_root, "ml/training_set").sort_values(keys).reset_index(drop=True)
    got = table(history_root, "ml/training_set").sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(got[expected.columns], expected)
    assert len(table(history_root, "ml/churn_predictions")) > 0
