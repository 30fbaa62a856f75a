"""Crash-point sweep: kill a real ``kedro run`` after each Delta commit in turn, run it again, and
compare every table with a run that was never interrupted.

``python -m tests.crash.harness --customers 20000 --days 180`` runs the sweep at the default
scale by hand (slow); the CI test runs it on a small business.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml
from deltalake import DeltaTable

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Columns that record when something ran, not what it computed.
# Also the ids of MLflow runs (a rerun trains and logs in new runs) and of release events (derived
# from their time), and the table version a baseline was computed on (a retried write adds
# versions); what they released is compared through the registry.
VOLATILE = {
    "_ingested_at",
    "_updated_at",
    "refreshed_at",
    "refresh_id",
    "_refresh_id",
    "scored_at",
    "logged_at",
    "rejected_at",
    "fired_at",
    "created_at",
    "event_ts",
    "event_id",
    "model_run_id",
    "kedro_run_id",
    "run_id",
    "training_set_version",
}
MLFLOW_RUN_ID = r"\b[0-9a-f]{32}\b"
# Histories of attempts: a retried refresh logs itself again (checked separately), and a retried
# retrain evaluates a new candidate run, whose baseline is kept beside the killed attempt's.
LOGS = {"monitoring/feature_refreshes", "monitoring/feature_summaries", "monitoring/baselines"}


def feature_sources(project: Path) -> dict[str, str]:
    """Each declared feature table's source, as a path under the catalog's folder (from its contract)."""
    sources = {}
    for path in sorted(project.glob("conf/*/feature_tables/*.yml")):
        for table, contract in (yaml.safe_load(path.read_text()).get("feature_tables") or {}).items():
            if contract and contract.get("source"):
                sources[table] = contract["source"].replace(".", "/")
    return sources


def make_project(root: Path, local_params: str) -> Path:
    """A copy of the project's configuration with ``local_params`` in conf/local and an empty data/."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_ROOT / "pyproject.toml", root)
    shutil.copytree(PROJECT_ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("credentials*"))
    (root / "conf" / "local" / "parameters_crash.yml").write_text(local_params)
    (root / "src").mkdir(exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    return root


def _plugin_path(root: Path) -> Path:
    """A folder holding a distribution whose ``kedro.hooks`` entry point is the crash hook."""
    plugin = root / "crash_plugin"
    info = plugin / "lakehouse_ml_crash_hook-0.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lakehouse-ml-crash-hook\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text("[kedro.hooks]\ncrash = tests.crash.crash_hook:hooks\n")
    return plugin


def kedro(project: Path, args: list[str], crash_after: int = 0, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run the kedro CLI in ``project``; the crash hook counts commits (and kills at ``crash_after``)."""
    env = {
        **os.environ,
        "LAKEHOUSE_ML_ROOT": str(project),
        "KEDRO_DISABLE_TELEMETRY": "1",
        # This tree's source before any installed copy (a worktree's venv may install another).
        "PYTHONPATH": os.pathsep.join(
            [str(_plugin_path(project.parent)), str(PROJECT_ROOT), str(PROJECT_ROOT / "src")]
        ),
        "CRASH_AFTER_COMMIT": str(crash_after),
        "CRASH_COUNT_FILE": str(project / "commits.log"),
    }
    env.pop("SPARK_REMOTE", None)
    kedro_bin = Path(sys.executable).with_name("kedro")
    return subprocess.run(
        [str(kedro_bin), *args], cwd=project, env=env, capture_output=True, text=True, timeout=timeout
    )


def check(result: subprocess.CompletedProcess, what: str) -> None:
    if result.returncode != 0:
        raise AssertionError(f"{what} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def registry(project: Path) -> pd.DataFrame:
    """The model registry as a table: per model version its validation status and the aliases on it."""
    from mlflow import MlflowClient

    client = MlflowClient(
        tracking_uri=f"sqlite:///{project / 'mlflow.db'}", registry_uri=f"sqlite:///{project / 'mlflow.db'}"
    )
    rows = []
    for model in client.search_registered_models():
        for version in client.search_model_versions(f"name = '{model.name}'"):
            rows.append(
                {
                    "model": model.name,
                    "version": str(version.version),
                    "validation_status": version.tags.get("validation_status", ""),
                    "aliases": ",".join(sorted(version.aliases)),
                }
            )
    return pd.DataFrame(rows, columns=["model", "version", "validation_status", "aliases"]).astype(str)


def tables(project: Path) -> dict[str, pd.DataFrame]:
    """Every Delta table of the lakehouse (work tables aside), as sorted frames without volatile
    columns, and the model registry."""
    out = {"registry": registry(project).sort_values(["model", "version"]).reset_index(drop=True)}
    for log in sorted((project / "data" / "lakehouse").glob("*/*/*/_delta_log")):
        name = "/".join(log.parent.parts[-2:])
        if name.startswith("_work/"):
            continue
        frame = DeltaTable(str(log.parent)).to_pandas()
        frame = frame.drop(columns=[c for c in frame.columns if c in VOLATILE])
        # Floats are compared to 9 decimals: a forest's parallel prediction and Spark's partial
        # sums add in thread order, so a rerun may differ in the last bits (seen in CI on 0.2% of
        # batch scores), which is not a lost or a wrong row.
        floats = frame.select_dtypes("floating").columns
        frame[floats] = frame[floats].round(9)
        # Lineage columns hold absolute paths, which differ between copies of the project.
        text = frame.astype(str).replace(str(project.resolve()), "<project>", regex=False)
        text = text.apply(lambda column: column.str.replace(str(project.resolve()), "<project>", regex=False))
        text = text.apply(lambda column: column.str.replace(MLFLOW_RUN_ID, "<run>", regex=True))
        out[name] = text.sort_values(list(text.columns)).reset_index(drop=True)
    return out


def differences(expected: dict[str, pd.DataFrame], actual: dict[str, pd.DataFrame]) -> list[str]:
    """What differs between two lakehouses: missing tables, row counts, contents (logs of attempts aside)."""
    problems = []
    for name in sorted(set(expected) | set(actual)):
        if name not in actual or name not in expected:
            problems.append(f"{name}: only in {'expected' if name in expected else 'actual'}")
            continue
        if name in LOGS:
            continue
        left, right = expected[name], actual[name]
        if len(left) != len(right):
            problems.append(f"{name}: {len(right)} rows, expected {len(left)}")
            continue
        try:
            pd.testing.assert_frame_equal(left, right[left.columns])
        except (AssertionError, KeyError) as error:
            problems.append(f"{name}: contents differ: {str(error)[:300]}")
    return problems


def stale_feature_tables(project: Path) -> list[str]:
    """Feature tables whose last refresh does not reflect their source's current version."""
    lake = project / "data" / "lakehouse" / "dev"
    if not (lake / "monitoring" / "feature_refreshes").exists():
        return []
    log = DeltaTable(str(lake / "monitoring" / "feature_refreshes")).to_pandas()
    last = log.sort_values("refreshed_at").groupby("table")["source_version"].last()
    return [
        f"{table}: last refresh reflects {source} version {last[table]}, the table is at {DeltaTable(str(lake / source)).version()}"
        for table, source in feature_sources(project).items()
        if table in last and last[table] != DeltaTable(str(lake / source)).version()
    ]


def sweep(base: Path, commands: list[list[str]], workdir: Path, limit: int | None = None) -> dict[str, object]:
    """Run ``commands`` on a copy of ``base`` once cleanly, then once per commit killed after it and
    run again; return the commit points and the differences found per point."""

    def fresh(name: str) -> Path:
        target = workdir / name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(base, target, symlinks=True)
        (target / "commits.log").unlink(missing_ok=True)
        return target

    clean = fresh("clean")
    for command in commands:
        check(kedro(clean, command), f"clean {' '.join(command)}")
    points = (clean / "commits.log").read_text().splitlines()
    expected = tables(clean)
    report: dict[str, object] = {"commits": points, "failures": {}, "clean": clean}
    for k in range(1, min(len(points), limit or len(points)) + 1):
        project = fresh(f"crash_{k}")
        for command in commands:
            result = kedro(project, command, crash_after=k)
            killed = len((project / "commits.log").read_text().splitlines()) >= k
            if result.returncode != 0 and killed:
                break  # killed itself, or a run it started was killed (its failure then fails this one)
            check(result, f"crash point {k}: {' '.join(command)}")
        (project / "commits.log").unlink(missing_ok=True)
        for command in commands:
            check(kedro(project, command), f"rerun after crash point {k} ({points[k - 1]})")
        problems = differences(expected, tables(project)) + stale_feature_tables(project)
        if problems:
            report["failures"][f"{k}: after {points[k - 1]}"] = problems
        shutil.rmtree(project)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=20000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lakehouse_ml_crash_sweep"))
    args = parser.parse_args()
    from tests.crash.test_crash_sweep import late_delivery

    base = make_project(args.workdir / "base", f"simulate: {{n_customers: {args.customers}, n_days: {args.days}}}\n")
    check(kedro(base, ["run", "--pipelines", "simulate,ingest,features"]), "base")
    late_delivery(base)
    print(json.dumps(sweep(base, [["run", "--pipelines", "ingest,features"]], args.workdir), indent=2))


if __name__ == "__main__":
    main()
