"""What the Procfile, Dockerfile and compose file run, started for real: the web server (serve.py) and celery beat."""

import os
import socket
import urllib.error
import urllib.request

import pytest
from django.conf import settings
from django_celery_beat.models import PeriodicTask

from mlops_site.celery import app as celery_app
from tests.e2e import processes


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _status(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (ConnectionError, urllib.error.URLError, TimeoutError):
        return None  # not listening yet, or its first request still loading the app on a busy machine


def test_every_scheduled_task_exists():
    celery_app.loader.import_default_modules()
    for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
        assert entry["task"] in celery_app.tasks, name


@pytest.mark.django_db(transaction=True)
def test_the_web_server_serves_the_admin_its_static_files_the_api_schema_and_metrics(tmp_path):
    """serve.py as the Dockerfile runs it: DEBUG off, static files collected first."""
    import subprocess
    import sys

    var = tmp_path / "var"
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
        cwd=processes.BASE_DIR,
        env={**os.environ, "MLOPS_VAR_DIR": str(var), "DEBUG": "0", "SECRET_KEY": "e2e-tests-only-secret-key"},
        check=True,
    )
    port = _free_port()
    process = processes.start_web(tmp_path, port=port, MLOPS_VAR_DIR=str(var))
    try:
        for path in ("/admin/login/", "/static/admin/css/base.css", "/api/schema/", "/metrics"):
            status = processes.wait_for(
                lambda path=path: _status(f"http://127.0.0.1:{port}{path}"), timeout=60, process=process, what=path
            )
            assert status == 200, path
    finally:
        processes.stop(process)


@pytest.mark.django_db(transaction=True)
def test_celery_beat_starts_and_puts_the_schedule_in_the_admin(tmp_path):
    process = processes.start(
        "celery",
        "-A",
        "mlops_site",
        "beat",
        "--loglevel",
        "INFO",
        "--pidfile",
        str(tmp_path / "beat.pid"),
        log=tmp_path / "beat.log",
    )
    names = set(settings.CELERY_BEAT_SCHEDULE)
    try:
        processes.wait_for(
            lambda: names <= set(PeriodicTask.objects.values_list("name", flat=True)),
            timeout=60,
            process=process,
            what="the schedule in the database",
        )
    finally:
        processes.stop(process)
    task = PeriodicTask.objects.get(name="reap-lost-runs")
    assert task.task == "experiments.reap_lost_runs"
    assert task.interval.every == 120
