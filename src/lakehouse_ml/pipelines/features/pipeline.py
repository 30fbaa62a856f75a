"""Features pipeline: one namespaced refresh pipeline per feature table."""

from collections.abc import Callable

from kedro.pipeline import Pipeline, node, pipeline

from lakehouse_ml.pipelines.features.nodes import (
    record_refresh,
    refresh_activity_features,
    refresh_profile_features,
    validate_staged,
)

# feature table → (how it is computed, the versions of the table it is computed from)
FEATURE_TABLES: dict[str, tuple[Callable, str]] = {
    "customer_activity": (refresh_activity_features, "customer_daily_activity@versions"),
    "customer_profile": (refresh_profile_features, "customers_silver@versions"),
}


def _refresh_pipeline(refresh: Callable) -> Pipeline:
    """Compute and stage → validate → MERGE → record, for one feature table."""
    contract = ["params:contract", "params:table"]
    return Pipeline(
        [
            node(
                refresh,
                inputs=["source", "current", "refreshes", *contract, "params:features"],
                outputs=["staged", "plan"],
                name="compute_and_stage",
            ),
            node(
                validate_staged,
                inputs=["staged", "plan", *contract],
                outputs=["table@spark", "summaries", "feature_metrics"],
                name="validate_staged",
            ),
            node(
                record_refresh,
                inputs=["staged", "plan", "summaries", "table@info", *contract],
                outputs=["refresh_log", "summary_log", "contract_stamp"],
                name="record_refresh",
            ),
        ],
        tags=["features"],
    )


def create_pipeline(**kwargs) -> Pipeline:
    """Create the refresh pipeline of every feature table declared in conf/<env>/feature_tables."""
    return sum(
        (
            pipeline(
                _refresh_pipeline(refresh),
                namespace=name,
                inputs={"source": source},
                # The stamped contract is read back by later stages: they see the table's final
                # version of this run (stamping may add a commit after the MERGE).
                outputs={"table@spark": f"{name}@spark", "table@info": f"{name}@info", "contract_stamp": f"{name}_contract"},
                parameters={
                    "params:contract": f"params:feature_tables.{name}",
                    "params:table": f"params:features.tables.{name}",
                    "params:features": "params:features",
                },
                tags=[name],
            )
            for name, (refresh, source) in FEATURE_TABLES.items()
        ),
        Pipeline([]),
    )
