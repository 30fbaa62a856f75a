"""The ``simulate`` pipeline: one node that writes the four landing sources."""

from __future__ import annotations

from typing import Any

from kedro.pipeline import Pipeline, node

from lakehouse_ml.pipelines.stage import as_stage

from .nodes import simulate_business

OUTPUTS = [
    "orders_landing@text",
    "sessions_landing@text",
    "customers_landing@text",
    "tickets_landing@text",
]


def create_pipeline(**kwargs: Any) -> Pipeline:
    """Simulate the business once and deliver every source's daily files."""
    stage = Pipeline(
        [
            node(
                func=simulate_business,
                inputs="params:simulate",
                outputs=OUTPUTS,
                name="simulate_business",
                tags=["simulate"],
            )
        ]
    )
    return as_stage("simulate", stage)
