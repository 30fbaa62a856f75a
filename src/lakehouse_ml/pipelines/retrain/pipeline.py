"""Retrain pipeline: training set → tuning → training → evaluation → registration, on the data as it
is now. A candidate that passes the gates becomes `challenger`; nothing is promoted (promotion stays
a separate, approved step), so an automatic retrain can never replace the champion by itself."""

from kedro.pipeline import Pipeline

from lakehouse_ml.pipelines.evaluation.pipeline import create_pipeline as evaluation
from lakehouse_ml.pipelines.registration.pipeline import create_pipeline as registration
from lakehouse_ml.pipelines.training.pipeline import create_pipeline as training
from lakehouse_ml.pipelines.training_set.pipeline import create_pipeline as training_set
from lakehouse_ml.pipelines.tuning.pipeline import create_pipeline as tuning


def create_pipeline(**kwargs) -> Pipeline:
    """Create the retrain pipeline."""
    return training_set() + tuning() + training() + evaluation() + registration()
