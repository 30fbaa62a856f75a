"""Project pipelines."""

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline, pipeline

# The main job, in the order of the loop: data, features (and their online copy for the scoring
# service), a tuned candidate, its gates, its
# registration (`challenger` if it passed), the release step (`auto_promotion`: champion in dev;
# in staging/prod the challenger waits for a reviewer and `kedro run --pipeline promotion`), and
# batch inference with whatever is champion then, and monitoring of what was served. Promotion and
# rollback also run on their own; `retrain` (a new challenger from the current data, never a
# promotion) is what monitoring's retrain action runs.
DEFAULT_PIPELINES = (
    "simulate",
    "ingest",
    "features",
    "publish_online",
    "training_set",
    "tuning",
    "training",
    "evaluation",
    "registration",
    "auto_promotion",
    "inference",
    "monitoring",
)


def default_pipeline(pipelines: dict[str, Pipeline]) -> Pipeline:
    """The stages of ``DEFAULT_PIPELINES`` that are loaded, in one pipeline."""
    stages = dict(pipelines)
    if "inference" in stages:
        # In the default run an environment may have no champion yet (a challenger waiting for
        # approval): scoring is then skipped, while `--pipeline inference` alone requires one.
        stages["inference"] = pipeline(stages["inference"], inputs={"champion_model@sklearn": "champion_model@if_any"})
    # Kedro loads only the pipelines a command asks for, so a stage may be absent here.
    return sum((stages[name] for name in DEFAULT_PIPELINES if name in stages), Pipeline([]))


def register_pipelines() -> dict[str, Pipeline]:
    """Register every pipeline under ``pipelines/`` and the default loop."""
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = default_pipeline(pipelines)
    return pipelines
