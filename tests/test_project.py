"""Project-level invariants: pipelines registered, catalog layout, kedro-viz layers, environments."""

from __future__ import annotations

import networkx as nx
import pytest
from kedro.framework.project import configure_project, pipelines
from kedro.io import DataCatalog

from tests.helpers import project_config

SCHEMAS = {"bronze", "silver", "gold", "quarantine", "features", "ml", "monitoring", "_work"}


@pytest.fixture(scope="module")
def registry():
    configure_project("lakehouse_ml")
    return pipelines


def test_pipelines_are_registered_and_default_runs_the_loop(registry):
    assert {"simulate", "ingest", "__default__"} <= set(registry)
    default = registry["__default__"]
    assert {n.name for n in registry["simulate"].nodes} <= {n.name for n in default.nodes}
    assert {n.name for n in registry["ingest"].nodes} <= {n.name for n in default.nodes}


def _resolved_datasets(registry, env="local"):
    catalog = DataCatalog.from_config(project_config(env)["catalog"])
    names = registry["__default__"].datasets()
    return {name: catalog.get(name) for name in names if not name.startswith("params:") and catalog.get(name) is not None}


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


def test_kedro_viz_layers_form_no_cycle(registry):
    """kedro-viz disables its layer view when layers form a cycle."""
    catalog_config = project_config("local")["catalog"]
    catalog = DataCatalog.from_config(catalog_config)

    def layer(name):
        dataset = catalog.get(name.split("@")[0] + ("@" + name.split("@")[1] if "@" in name else ""))
        metadata = getattr(dataset, "metadata", None) or {}
        return (metadata.get("kedro-viz") or {}).get("layer")

    graph = nx.DiGraph()
    for node in registry["__default__"].nodes:
        for source in filter(None, map(layer, node.inputs)):
            for target in filter(None, map(layer, node.outputs)):
                if source != target:
                    graph.add_edge(source, target)
    assert nx.is_directed_acyclic_graph(graph), list(nx.simple_cycles(graph))
    assert list(nx.topological_sort(graph))[0] == "landing"
