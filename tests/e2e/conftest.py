"""The real processes the end-to-end tests start: a Celery worker over the configured broker."""

import uuid

import pytest

from tests.e2e import processes


@pytest.fixture
def worker_env():
    """Settings the worker process gets from its environment; a test module overrides this fixture."""
    return {}


@pytest.fixture
def worker(tmp_path, worker_env):
    """A real `celery worker` process consuming the training and default queues."""
    processes.purge_queues()
    process = processes.start(
        "celery",
        "-A",
        "mlops_site",
        "worker",
        "--queues",
        "training,default",
        "--concurrency",
        "2",
        "--pool",
        "prefork",
        "--loglevel",
        "INFO",
        "--hostname",
        f"test-{uuid.uuid4().hex[:8]}@%h",
        "--without-gossip",
        "--without-mingle",
        log=tmp_path / "worker.log",
        **worker_env,
    )
    yield process
    processes.stop(process)
