import pytest

from experiments import services
from tests.helpers import run_dispatches

# A small, fast run; each test overrides what it is about.
SMALL_RUN = {"experiment": "tests", "dataset": "iris", "algorithm": "random_forest", "params": {"n_estimators": 10}}


@pytest.fixture
def launch(user):
    """Launch a run in this process (the CLI's path without --queue), as a data scientist."""

    def _launch(**kwargs):
        return services.run_launch(**{**SMALL_RUN, "inline": True, "by": user, **kwargs})

    return _launch


@pytest.fixture
def queue(user, django_capture_on_commit_callbacks):
    """Launch a run as the API does, keeping its Celery dispatch from reaching the broker."""

    def _queue(**kwargs):
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            run = services.run_launch(**{**SMALL_RUN, "by": user, **kwargs})
        assert len(run_dispatches(callbacks)) == 1
        return run

    return _queue
