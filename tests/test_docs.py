"""The configuration reference cannot go stale: every parameter of conf/base/parameters_*.yml is on it.

The reference page (docs/pages/configuration.md) is written by hand. These tests read every base
parameters file as YAML nodes and check that each parameter key appears on the page, in a table
row that also shows its default exactly as the file writes it. What counts as a parameter:

- every key of a block mapping (written one key per line), at any depth, named by its dotted path
  (`monitoring.drift.prediction.psi`);
- a flow mapping or any sequence (`{roc_auc: 0.75}`, `[batch, online]`) is one value, shown whole as
  the default of its key;
- a list of named mappings (`monitoring_rules`) is shown as one table per item: each item's `name`
  and each of its keys must be on the page.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PARAMETER_FILES = sorted((PROJECT_ROOT / "conf" / "base").glob("parameters_*.yml"))
REFERENCE = PROJECT_ROOT / "docs" / "pages" / "configuration.md"


def _source(text: str, node: yaml.Node) -> str:
    """A value as the file writes it, on one line (flow collections keep their brackets)."""
    if isinstance(node, yaml.ScalarNode):
        return node.value if node.value != "" or node.style else "null"
    return " ".join(text[node.start_mark.index : node.end_mark.index].split())


def parameters(path: Path) -> tuple[list[tuple[str, str | None]], list[tuple[str, str, list[str]]]]:
    """(dotted key, default as written or None for a group) per parameter, and
    (list key, item name, item keys) per item of a list of named mappings."""
    text = path.read_text()
    keys: list[tuple[str, str | None]] = []
    named: list[tuple[str, str, list[str]]] = []

    def walk(node: yaml.Node, prefix: str) -> None:
        for key_node, value in node.value:
            dotted = f"{prefix}{key_node.value}"
            if isinstance(value, yaml.MappingNode) and not value.flow_style:
                keys.append((dotted, None))
                walk(value, dotted + ".")
            elif (
                isinstance(value, yaml.SequenceNode)
                and not value.flow_style
                and value.value
                and all(isinstance(item, yaml.MappingNode) for item in value.value)
            ):
                keys.append((dotted, None))
                for item in value.value:
                    fields = {k.value: v for k, v in item.value}
                    named.append((dotted, fields["name"].value, list(fields)))
            else:
                keys.append((dotted, _source(text, value)))

    root = yaml.compose(text)
    if root is not None:
        walk(root, "")
    return keys, named


def _rows(page: str) -> dict[str, str]:
    """Table rows of the page by the parameter their first cell names."""
    rows = {}
    for line in page.splitlines():
        match = re.match(r"\|\s*`([^`]+)`\s*\|", line)
        if match:
            rows[match.group(1)] = line
    return rows


def test_every_base_parameters_file_is_read() -> None:
    # A renamed conf folder would make the reference test below pass on nothing.
    assert len(PARAMETER_FILES) >= 15, PARAMETER_FILES


@pytest.mark.parametrize("path", PARAMETER_FILES, ids=lambda p: p.name)
def test_reference_lists_every_parameter_with_its_default(path: Path) -> None:
    page = REFERENCE.read_text()
    rows = _rows(page)
    keys, named = parameters(path)
    missing = [key for key, _ in keys if key not in rows]
    assert not missing, f"{path.name}: parameters missing from {REFERENCE.name}: {missing}"
    wrong = [
        (key, default)
        for key, default in keys
        if default is not None and f"`{default}`" not in " ".join(rows[key].replace("\\|", "|").split())
    ]
    assert not wrong, f"{path.name}: the reference shows another default for: {wrong}"
    for list_key, name, fields in named:
        assert f"`{name}`" in page, f"{path.name}: {list_key} item {name!r} missing from the reference"
        absent = [field for field in fields if f"`{field}`" not in page]
        assert not absent, f"{path.name}: {list_key} item {name!r}: keys {absent} missing from the reference"
