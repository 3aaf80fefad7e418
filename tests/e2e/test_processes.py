"""What the Procfile, Dockerfile and compose file run, started for real: gunicorn and celery beat."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings
from django_celery_beat.models import PeriodicTask

from mlops_site.celery import app as celery_app
from tests.e2e.test_worker import _database_url

BASE_DIR = Path(__file__).resolve().parents[2]


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(process):
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _env():
    return {**os.environ, "DATABASE_URL": _database_url(), "CELERY_BROKER_URL": settings.CELERY_BROKER_URL}


def test_every_scheduled_task_exists():
    celery_app.loader.import_default_modules()
    for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
        assert entry["task"] in celery_app.tasks, name


@pytest.mark.django_db(transaction=True)
def test_gunicorn_serves_the_admin_its_static_files_the_api_schema_and_metrics(tmp_path):
    port = _free_port()
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "mlops_site.wsgi:application",
                "--workers",
                "2",
                "--bind",
                f"127.0.0.1:{port}",
            ],
            cwd=BASE_DIR,
            env=_env(),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        statuses = {}
        deadline = time.monotonic() + 60
        for path in ("/admin/login/", "/static/admin/css/base.css", "/api/schema/", "/metrics"):
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
                        statuses[path] = response.status
                    break
                except (ConnectionError, urllib.error.URLError):
                    if time.monotonic() > deadline or process.poll() is not None:
                        pytest.fail(f"gunicorn did not answer {path}:\n{log.read_text()[-3000:]}")
                    time.sleep(0.5)
        assert statuses == dict.fromkeys(statuses, 200)
    finally:
        _stop(process)


@pytest.mark.django_db(transaction=True)
def test_celery_beat_starts_and_puts_the_schedule_in_the_admin(tmp_path):
    log = tmp_path / "beat.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "mlops_site",
                "beat",
                "--loglevel",
                "INFO",
                "--pidfile",
                str(tmp_path / "beat.pid"),
            ],
            cwd=BASE_DIR,
            env=_env(),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        names = set(settings.CELERY_BEAT_SCHEDULE)
        while not names <= set(PeriodicTask.objects.values_list("name", flat=True)):
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail(f"beat did not sync its schedule:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        task = PeriodicTask.objects.get(name="reap-lost-runs")
        assert task.task == "experiments.reap_lost_runs"
        assert task.interval.every == 120
    finally:
        _stop(process)
