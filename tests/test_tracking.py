"""What the project's MLflow runs record (the run hooks themselves: tests/hooks/test_node_runs.py)."""

from __future__ import annotations

from lakehouse_ml.tracking import table_name_from_path


def test_table_name_from_path():
    assert table_name_from_path("/x/data/lakehouse/dev/gold/features") == "dev.gold.features"
    assert table_name_from_path("/x/data/02_intermediate/t") is None
