"""The release tests' fixture: a fresh MLflow store per test (see tests/pipelines/registration/releases.py)."""

from tests.pipelines.registration.releases import release_store  # noqa: F401
