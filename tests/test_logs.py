"""Structured logs: with LOG_FORMAT=json every line is one JSON object carrying the id of the request it was
written in, the same X-Request-ID the client got back (and the audit trail keeps)."""

import copy
import io
import json
import logging
import logging.config

import pytest
from django.conf import settings

pytestmark = pytest.mark.django_db


@pytest.fixture
def json_lines():
    """The project's LOGGING as a production process applies it (LOG_FORMAT=json), written to a buffer."""
    stream = io.StringIO()
    config = copy.deepcopy(settings.LOGGING)
    config["handlers"]["console"].update(formatter="json", stream=stream)
    logging.config.dictConfig(config)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        logging.config.dictConfig(settings.LOGGING)


@pytest.mark.django_db(transaction=True)  # the audit head is logged when the change commits, in the request
def test_each_line_is_json_with_the_request_id_the_client_got(client, json_lines, django_user_model):
    from django.core.files.uploadedfile import SimpleUploadedFile

    admin = django_user_model.objects.create_superuser("logs", password="pw-logs-1")
    client.force_login(admin)
    # A change made in a request logs the audit chain's head inside it; a 404 is logged by Django after it.
    csv = SimpleUploadedFile("tiny.csv", b"x,y\n1,a\n2,b\n3,a\n4,b\n5,a\n6,b\n7,a\n8,b\n9,a\n10,b\n")
    created = client.post(
        "/api/v1/datasets", {"name": "tiny", "target": "y", "file": csv}, HTTP_X_REQUEST_ID="req-logs-1"
    )
    assert created.status_code == 201, created.content
    missing = client.get("/api/v1/no-such-thing", HTTP_X_REQUEST_ID="req-logs-2")
    assert missing.status_code == 404
    lines = json_lines()
    for line in lines:
        assert {"time", "level", "logger", "message", "request_id"} <= set(line)
    (audit,) = [line for line in lines if line["logger"] == "mlops_site.audit"]
    assert audit["message"].startswith("audit head #")
    assert audit["request_id"] == "req-logs-1"
    (not_found,) = [line for line in lines if line["logger"] == "django.request"]
    assert (not_found["request_id"], not_found["status_code"], not_found["level"]) == ("req-logs-2", 404, "WARNING")
    assert "no-such-thing" in not_found["message"]


def test_outside_a_request_the_id_is_empty_and_a_traceback_is_kept(json_lines):
    try:
        raise ValueError("broken on purpose")
    except ValueError:
        logging.getLogger("mlops_site.test").exception("it failed")
    (line,) = [line for line in json_lines() if line["logger"] == "mlops_site.test"]
    assert (line["level"], line["message"], line["request_id"]) == ("ERROR", "it failed", "")
    assert "ValueError: broken on purpose" in line["exception"]
    assert line["time"].endswith("+00:00")


def test_json_is_the_default_with_debug_off(monkeypatch):
    """What a production process gets without setting LOG_FORMAT, and a wrong value refused at start."""
    import importlib

    import mlops_site.settings as project_settings

    monkeypatch.setenv("DEBUG", "0")
    monkeypatch.setenv("SECRET_KEY", "x" * 50)
    monkeypatch.setenv("ALLOWED_HOSTS", "example.com")
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    try:
        assert importlib.reload(project_settings).LOGGING["handlers"]["console"]["formatter"] == "json"
        monkeypatch.setenv("DEBUG", "1")
        assert importlib.reload(project_settings).LOGGING["handlers"]["console"]["formatter"] == "text"
        monkeypatch.setenv("LOG_FORMAT", "xml")
        with pytest.raises(Exception, match="LOG_FORMAT must be json or text"):
            importlib.reload(project_settings)
    finally:
        monkeypatch.undo()
        importlib.reload(project_settings)


def test_a_line_written_in_a_task_names_the_task(json_lines):
    from mlops_site.celery import app as celery_app

    @celery_app.task(name="tests.log_in_a_task")
    def log_in_a_task():
        logging.getLogger("mlops_site.test").info("working")

    result = log_in_a_task.apply(task_id="task-logs-1")
    assert result.successful()
    (line,) = [line for line in json_lines() if line["logger"] == "mlops_site.test"]
    assert (line["task_id"], line["task_name"], line["request_id"]) == ("task-logs-1", "tests.log_in_a_task", "")
