"""Start and stop the platform's real processes (celery worker and beat, gunicorn) from tests.

They run against the test database, so the tests that use them commit their data
(django_db(transaction=True)).
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

BASE_DIR = Path(__file__).resolve().parents[2]


def database_url():
    """The test database as a DATABASE_URL a child process can use."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    credentials = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def start(*args, log, **extra_env):
    """Start `python -m <args>` in its own process group, with this test's stores, logging to `log`."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "ARTIFACT_ROOT": str(settings.ARTIFACT_ROOT),
        "PREDICTION_LOG_SPILL_DIR": str(settings.PREDICTION_LOG_SPILL_DIR),
        "MLFLOW_TRACKING_URI": settings.MLFLOW_TRACKING_URI,
        "MLFLOW_ARTIFACT_LOCATION": settings.MLFLOW_ARTIFACT_LOCATION,
        "MLFLOW_MIRROR_ENABLED": "1" if settings.MLFLOW_MIRROR_ENABLED else "0",
        **extra_env,
    }
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=BASE_DIR,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    process.log = log
    return process


def stop(process):
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_for(predicate, *, timeout, process, what):
    """Poll `predicate` until it returns something true; fail with the process's log otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if process.poll() is not None:
            pytest.fail(f"process exited with {process.returncode} while waiting for {what}:\n{_tail(process)}")
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}; log:\n{_tail(process)}")


def _tail(process):
    return process.log.read_text(errors="replace")[-4000:]


def start_web(tmp_path, *, port, workers=2, **extra_env):
    """The production web server as `make serve`, the Dockerfile and compose start it (serve.py: granian)."""
    return start(
        "serve",
        log=tmp_path / "web.log",
        PORT=str(port),
        WEB_HOST="127.0.0.1",
        WEB_WORKERS=str(workers),
        WEB_RESPAWN_INTERVAL="0.5",
        DEBUG="0",  # as in production
        HTTPS_ONLY="0",  # plain HTTP on localhost, as `make serve`
        SECRET_KEY="e2e-tests-only-secret-key",
        **extra_env,
    )


def worker_pids(process):
    """The pids of a server's worker processes (the children of its main process)."""
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    return [int(pid) for pid in children]


def purge_queues():
    """Drop messages other tests (or an earlier, interrupted run) left in the broker, so a worker started
    now runs only what its test queues."""
    from mlops_site.celery import app as celery_app

    with celery_app.connection_for_write() as broker:
        for queue in ("training", "default", "monitoring", "alerts"):
            with contextlib.suppress(Exception):  # a queue that was never declared
                broker.default_channel.queue_purge(queue)
