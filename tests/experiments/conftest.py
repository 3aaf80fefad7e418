import pytest

from experiments import services


@pytest.fixture
def launch():
    """Launch a run in this process (the CLI's path without --queue) with small defaults."""

    def _launch(**kwargs):
        options = {
            "experiment": "tests",
            "dataset": "iris",
            "algorithm": "random_forest",
            "params": {"n_estimators": 10},
            "inline": True,
            **kwargs,
        }
        return services.run_launch(**options)

    return _launch


@pytest.fixture
def queue(django_capture_on_commit_callbacks):
    """Launch a run as the API does, keeping its Celery dispatch from reaching the broker."""

    def _queue(**kwargs):
        options = {
            "experiment": "tests",
            "dataset": "iris",
            "algorithm": "random_forest",
            "params": {"n_estimators": 10},
            **kwargs,
        }
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            run = services.run_launch(**options)
        assert len(callbacks) == 1
        return run

    return _queue
