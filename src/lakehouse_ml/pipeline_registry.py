"""Project pipelines."""

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

# The main job, in the order of the loop, up to a registered (and, if it passed the gates,
# `challenger`) model version. Promotion, rollback and batch inference are run on purpose:
# `kedro run --pipeline promotion` (approval-gated in staging/prod), then `--pipeline inference`.
DEFAULT_PIPELINES = ("simulate", "ingest", "features", "training_set", "tuning", "training", "evaluation", "registration")


def register_pipelines() -> dict[str, Pipeline]:
    """Register every pipeline under ``pipelines/`` and the default loop."""
    pipelines = find_pipelines(raise_errors=True)
    # Kedro loads only the pipelines a command asks for, so a stage may be absent here.
    pipelines["__default__"] = sum(
        (pipelines[name] for name in DEFAULT_PIPELINES if name in pipelines), Pipeline([])
    )
    return pipelines
