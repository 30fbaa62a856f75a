"""The example notebook runs headlessly, top to bottom, on a small lakehouse in a copy of the project.

The copy holds only what Kedro needs besides the installed package (pyproject.toml, conf/ without
personal files, notebooks/, an empty src/ and data/). `kedro run --pipelines simulate,ingest` (the
notebook needs silver only) builds its lakehouse twice (14
then 20 days of deliveries, so silver has a CREATE and a MERGE version), then the notebook runs in
a kernel of this interpreter, once from notebooks/ and once from the project root, and its printed
numbers are checked against the Delta tables read here with deltalake.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from deltalake import DeltaTable
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

from lakehouse_ml.datasets import PandasDeltaDataset
from tests.helpers import PROJECT_ROOT

NOTEBOOK = PROJECT_ROOT / "notebooks" / "explore_silver_and_extend_pipeline.ipynb"
# Two small runs: the second delivers six more days, which silver MERGEs as a new version.
RUNS = ("simulate.n_customers=300,simulate.n_days=14", "simulate.n_customers=300,simulate.n_days=20")
KERNEL_NAME = "lakehouse-ml-notebook-test"

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def project_env(project: Path) -> dict[str, str]:
    """The environment of `kedro run` and of the kernel: MLflow's store in the copy, no telemetry."""
    env = {**os.environ, "LAKEHOUSE_ML_ROOT": str(project), "KEDRO_DISABLE_TELEMETRY": "1"}
    env.pop("SPARK_REMOTE", None)  # the test session's engine; the notebook starts its own
    return env


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the project with a small lakehouse built by the real `kedro run`."""
    copy = tmp_path_factory.mktemp("notebook_project")
    shutil.copy(PROJECT_ROOT / "pyproject.toml", copy)
    shutil.copytree(PROJECT_ROOT / "conf", copy / "conf", ignore=shutil.ignore_patterns("local", "credentials*"))
    (copy / "conf" / "local").mkdir()
    shutil.copy(PROJECT_ROOT / "conf" / "local" / "README.md", copy / "conf" / "local")
    shutil.copytree(PROJECT_ROOT / "notebooks", copy / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    # Kedro insists that the source folder exists inside the project (a symlink resolves outside
    # it and is refused); the package itself is imported from the installed project.
    (copy / "src").mkdir()
    (copy / "data").mkdir()
    for params in RUNS:
        result = subprocess.run(
            [sys.executable, "-m", "kedro", "run", "--pipelines", "simulate,ingest", "--params", params],
            cwd=copy,
            env=project_env(copy),
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert result.returncode == 0, (
            f"kedro run --params {params} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return copy


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory) -> KernelSpecManager:
    """A kernelspec for this very interpreter, so no user-level `python3` spec can shadow it."""
    kernels = tmp_path_factory.mktemp("kernels")
    spec = kernels / KERNEL_NAME
    spec.mkdir()
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "lakehouse_ml tests",
                "language": "python",
            }
        )
    )
    return KernelSpecManager(kernel_dirs=[str(kernels)])


def execute(notebook: Path, cwd: Path, env: dict[str, str], specs: KernelSpecManager) -> nbformat.NotebookNode:
    """Execute ``notebook`` in a fresh kernel started in ``cwd``; raise on the first failing cell."""
    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(
        nb,
        km=AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs),
        timeout=120,  # per cell
        startup_timeout=60,
        resources={"metadata": {"path": str(cwd)}},  # the kernel's working directory
    )
    client.execute(env=env, cleanup_kc=True)  # shut the kernel down even though we made its manager
    return nb


def stdout_of(nb: nbformat.NotebookNode) -> str:
    """Everything the notebook's cells printed."""
    return "".join(
        output.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.output_type == "stream" and output.name == "stdout"
    )


def results_of(nb: nbformat.NotebookNode) -> str:
    """The plain-text representation of every displayed value (tables, dtypes, ...)."""
    return "".join(
        output.get("data", {}).get("text/plain", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.output_type in ("execute_result", "display_data")
    )


def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code[0].source.startswith("%load_ext kedro.ipython")
    assert "%reload_kedro" in code[0].source
    assert all(not cell.outputs and cell.execution_count is None for cell in code)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("start_in", ["notebooks", "."], ids=["from_notebooks_dir", "from_project_root"])
def test_notebook_runs_against_the_project_lakehouse(project, kernel_specs, start_in):
    silver_path = str(project / "data/lakehouse/dev/silver/orders")
    rows = len(PandasDeltaDataset(filepath=silver_path, columns=["event_id"]).load())
    version = DeltaTable(silver_path).version()
    rows_v0 = len(PandasDeltaDataset(filepath=silver_path, version=0, columns=["event_id"]).load())
    # The fixture's two runs: CREATE, then an append of the new events and a MERGE of corrections.
    assert version == 2 and 0 < rows_v0 < rows

    nb = execute(project / "notebooks" / NOTEBOOK.name, project / start_in, project_env(project), kernel_specs)
    printed = stdout_of(nb)
    shown = results_of(nb)

    # The project was found from the working directory, and it is the copy.
    assert f"project:   {project.resolve()}\n" in printed
    assert (
        "pipelines: ['__default__', 'auto_promotion', 'evaluation', 'features', 'inference', 'ingest', 'monitoring', 'promotion', 'publish_online', 'registration', 'retrain', 'rollback', 'simulate', 'training', 'training_set', 'tuning']"
        in printed
    )
    # Spark, pandas (transcoding) and the new node's weekly totals agree with deltalake.
    assert f"orders_silver rows (Spark): {rows}\n" in printed
    assert f"orders_silver rows (pandas): {rows}\n" in printed
    assert f"weekly_orders total orders: {rows}\n" in printed
    assert "|currency|orders|customers|gross_amount|net_amount|avg_items|" in printed  # Spark's show()
    # Delta history and time travel.
    assert f"orders_silver Delta version: {version}\n" in printed
    assert "MERGE" in shown and "WRITE" in shown and "CREATE TABLE" in shown
    assert f"rows at version 0: {rows_v0}; rows now: {rows}\n" in printed
    # The ad-hoc node's output went to a MemoryDataset in the project catalog.
    assert "{'weekly_orders': 'MemoryDataset'}" in printed
    assert "week_start" in shown and "net_revenue_eur" in shown
    # Catalog paths resolved against the project root, not the kernel's working directory.
    assert not (project / "notebooks" / "data").exists()
