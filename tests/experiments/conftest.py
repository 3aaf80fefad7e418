import pytest

from experiments import services

# A small, fast run; each test overrides what it is about.
SMALL_RUN = {"experiment": "tests", "dataset": "iris", "algorithm": "random_forest", "params": {"n_estimators": 10}}


@pytest.fixture
def launch():
    """Launch a run in this process (the CLI's path without --queue)."""

    def _launch(**kwargs):
        return services.run_launch(**{**SMALL_RUN, "inline": True, **kwargs})

    return _launch


@pytest.fixture
def queue(django_capture_on_commit_callbacks):
    """Launch a run as the API does, keeping its Celery dispatch from reaching the broker."""

    def _queue(**kwargs):
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            run = services.run_launch(**{**SMALL_RUN, **kwargs})
        assert len(callbacks) == 1
        return run

    return _queue
