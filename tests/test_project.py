"""Project-level invariants: pipelines registered, catalog layout, kedro-viz layers, environments."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import networkx as nx
import pytest
import yaml
from kedro.framework.project import configure_project, pipelines
from kedro.io import DataCatalog

from tests.helpers import PROJECT_ROOT, project_config

SCHEMAS = {"bronze", "silver", "gold", "quarantine", "features", "ml", "monitoring", "_work"}


@pytest.fixture(scope="module")
def registry():
    configure_project("lakehouse_ml")
    return pipelines


def test_pipelines_are_registered_and_default_runs_the_loop(registry):
    assert {"simulate", "ingest", "features", "training_set", "tuning", "training", "__default__"} <= set(registry)
    default = registry["__default__"]
    assert {n.name for n in registry["simulate"].nodes} <= {n.name for n in default.nodes}
    assert {n.name for n in registry["ingest"].nodes} <= {n.name for n in default.nodes}
    assert {n.name for n in registry["training"].nodes} <= {n.name for n in default.nodes}
    assert "tuning.tune" in {n.name for n in default.nodes}


def _resolved_datasets(registry, env="local"):
    catalog = DataCatalog.from_config(project_config(env)["catalog"])
    names = registry["__default__"].datasets()
    return {
        name: catalog.get(name) for name in names if not name.startswith("params:") and catalog.get(name) is not None
    }


@pytest.mark.parametrize("env,catalog_name", [("local", "dev"), ("staging", "staging"), ("prod", "prod")])
def test_every_table_lives_in_its_environments_catalog_and_schema(registry, env, catalog_name):
    for name, dataset in _resolved_datasets(registry, env).items():
        described = dataset._describe()
        path = described.get("filepath")
        if path is None or "lakehouse" not in str(path):
            continue
        parts = str(path).split("/lakehouse/")[1].split("/")
        assert parts[0] == catalog_name, (name, path)
        assert parts[1] in SCHEMAS, (name, path)


@pytest.mark.parametrize("env,catalog_name", [("local", "dev"), ("staging", "staging"), ("prod", "prod")])
def test_models_and_reports_are_kept_per_environment(registry, env, catalog_name):
    config = project_config(env)
    catalog = config["catalog"]
    paths = {}
    for name, entry in catalog.items():
        if isinstance(entry, dict):
            wrapped = entry.get("dataset") if isinstance(entry.get("dataset"), dict) else {}
            paths[name] = entry.get("filepath") or wrapped.get("filepath")
    local = {name: p for name, p in paths.items() if p and ("06_models" in p or "08_reporting" in p)}
    assert {"tuning_study_result", "candidate@pointer", "candidate_provenance"} <= set(local)
    for name, path in local.items():
        assert f"/{catalog_name}/" in path, (name, path)
    assert f"/06_models/{catalog_name}/" in config["catalog"]["optuna_storage"]["url"]
    assert "storage" not in config["parameters"]["tuning"]
    assert config["parameters"]["registry"]["model_name"] == f"{catalog_name}.ml.churn_classifier"
    assert config["catalog"]["champion_model_for_evaluation"]["model_name"] == f"{catalog_name}.ml.churn_classifier"


@pytest.mark.parametrize("env,catalog_name", [("local", "dev"), ("staging", "staging"), ("prod", "prod")])
def test_mlflow_is_configured_per_environment(env, catalog_name):
    """conf/<env>/mlflow.yml names the experiment; the store and artifact folder are absolute paths."""
    mlflow_config = project_config(env)["mlflow"]
    assert mlflow_config["tracking"]["experiment"]["name"] == f"lakehouse_ml_{catalog_name}"
    uri = mlflow_config["server"]["mlflow_tracking_uri"]
    assert uri.startswith("sqlite:///") and Path(uri.removeprefix("sqlite:///")).is_absolute()
    assert mlflow_config["server"]["mlflow_registry_uri"] == uri
    assert Path(mlflow_config["tracking"]["experiment"]["create_experiment_kwargs"]["artifact_location"]).is_absolute()
    # Soft merge: an environment overrides the experiment name and keeps every other base key.
    assert mlflow_config["tracking"]["params"]["long_params_strategy"] == "truncate"
    assert mlflow_config["tracking"]["run"]["nested"] is False  # see conf/base/mlflow.yml


# kedro-viz's layer bands, in the order the loop fills them.
LAYERS = (
    "landing",
    "bronze",
    "quarantine",
    "silver",
    "gold",
    "features",
    "model_input",
    "models",
    "model_output",
    "monitoring",
    "reporting",
)


def test_kedro_viz_layers_form_no_cycle(registry):
    """kedro-viz disables its layer view when layers form a cycle in any registered pipeline. It
    gives every variant of a transcoded dataset one layer and orders layers through the datasets
    that have none, so this check does too."""
    catalog = DataCatalog.from_config(project_config("local")["catalog"])

    def layer(name):
        metadata = getattr(catalog.get(name), "metadata", None) or {}
        return (metadata.get("kedro-viz") or {}).get("layer")

    for pipeline_name, pipe in registry.items():
        datasets = nx.DiGraph()
        for node in pipe.nodes:
            datasets.add_edges_from((i.split("@")[0], o.split("@")[0]) for i in node.inputs for o in node.outputs)
        layers: dict[str, str] = {}
        for name in pipe.datasets():
            if (found := layer(name)) is not None:
                assert layers.setdefault(name.split("@")[0], found) == found, f"{name}: variants in two layers"
        assert set(layers.values()) <= set(LAYERS), set(layers.values()) - set(LAYERS)
        bands = nx.DiGraph()
        for base, band in layers.items():
            bands.add_edges_from(
                (band, layers[d]) for d in nx.descendants(datasets, base) if layers.get(d, band) != band
            )
        assert nx.is_directed_acyclic_graph(bands), (pipeline_name, list(nx.simple_cycles(bands)))
        assert all(LAYERS.index(a) < LAYERS.index(b) for a, b in bands.edges), (pipeline_name, sorted(bands.edges))


def test_each_stage_is_a_modular_pipeline_of_its_name(registry):
    """kedro-viz collapses the graph to stages through the nodes' namespaces."""
    from lakehouse_ml.pipeline_registry import DEFAULT_PIPELINES

    def stages(name):
        return {node.namespace.split(".")[0] for node in registry[name].nodes if node.namespace}

    for name in set(registry) - {"__default__", "retrain"}:
        assert stages(name) == {name}, name
    assert all(node.namespace for node in registry["__default__"].nodes)
    assert stages("__default__") == set(DEFAULT_PIPELINES)
    assert stages("retrain") == {"training_set", "tuning", "training", "evaluation", "registration"}


def test_no_code_resolves_a_latest_model_version():
    """Releases are loaded by alias or explicit version only, never "the latest version"."""
    pattern = re.compile(
        r"get_latest_versions|search_model_versions\([^)]*order_by|models:/[^\s\"']*/latest|models:/[^\s\"']*@latest"
        r"|(version|alias|stage)\s*[=:]\s*[\"']?latest\b|latest_version",
        re.IGNORECASE,
    )
    roots = [PROJECT_ROOT / "src", PROJECT_ROOT / "conf", PROJECT_ROOT / "notebooks"]
    offenders = [
        f"{path.relative_to(PROJECT_ROOT)}:{number}: {line.strip()}"
        for root in roots
        for path in root.rglob("*")
        if path.suffix in {".py", ".yml", ".yaml", ".ipynb"}
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not offenders, "\n".join(offenders)


def test_each_feature_tables_file_declares_the_table_it_is_named_after():
    """Kedro merges every feature_tables file into one `feature_tables` parameter and cannot check
    that a file declares the table it is named after; a mismatch would silently move a contract."""
    files = sorted(p for p in (PROJECT_ROOT / "conf").glob("*/feature_tables/*") if not p.name.startswith("."))
    assert files, "no conf/<env>/feature_tables/ file found"
    problems = []
    for path in files:
        content = yaml.safe_load(path.read_text())
        tables = content.get("feature_tables") if isinstance(content, dict) else None
        if not isinstance(tables, dict) or set(content) != {"feature_tables"} or set(tables) != {path.stem}:
            got = f"top-level keys {sorted(content)}" if isinstance(content, dict) else repr(content)
            if isinstance(tables, dict):
                got += f", tables {sorted(tables)}"
            problems.append(
                f"{path.relative_to(PROJECT_ROOT)}: expected exactly `feature_tables: {{{path.stem}: ...}}`, got {got}"
            )
    assert not problems, "\n".join(problems)


# Layers point one way: pipelines -> libraries -> engine. Libraries never import pipelines; the
# scoring service runs without Kedro's settings, hooks or the engine (it reads the online store).
LIBRARIES = (
    "features",
    "online",
    "serving",
    "monitoring",
    "modeling",
    "datasets",
    "lakehouse.py",
    "release.py",
    "governance.py",
)
FORBIDDEN = {
    "lakehouse_ml.pipelines": LIBRARIES,
    "lakehouse_ml.settings": LIBRARIES,
    "lakehouse_ml.hooks": LIBRARIES,
    "lakehouse_ml.engine": ("serving", "online"),
    "kedro.framework": ("serving", "online", "features", "monitoring", "modeling"),
}


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports (at any depth: a lazy import is still a dependency)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            # A relative import is resolved against the file's package (`from ..pipelines import x`).
            package = ".".join(path.relative_to(PROJECT_ROOT / "src").with_suffix("").parts[: -node.level or None])
            module = ".".join(part for part in (package if node.level else "", node.module or "") if part)
            found.append((node.lineno, module))
    return found


def test_layers_point_one_way():
    package = PROJECT_ROOT / "src" / "lakehouse_ml"
    offenders = []
    for module, layers in FORBIDDEN.items():
        for layer in layers:
            paths = [package / layer] if layer.endswith(".py") else sorted((package / layer).rglob("*.py"))
            offenders += [
                f"{path.relative_to(PROJECT_ROOT)}:{line}: imports {name}"
                for path in paths
                for line, name in _imports(path)
                if name == module or name.startswith(module + ".")
            ]
    assert not offenders, "\n".join(offenders)
