"""The short middleware chain of prediction requests answers exactly as Django's full chain does."""

import json

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.test import RequestFactory

from serving.wsgi import PREDICTION_PATHS, PredictionHandler
from tests.serving.conftest import IRIS_ROW

pytestmark = pytest.mark.django_db

IGNORED = {"x-request-id", "date", "content-length"}  # the length: latency_ms differs


@pytest.fixture(autouse=True)
def keep_the_test_connection():
    """As Django's test client does: a request's end must not close this test's database connection."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def _call(handler, request):
    answer = {}

    def start_response(status, headers, exc_info=None):
        answer["status"] = status
        answer["headers"] = {k.lower(): v for k, v in headers if k.lower() not in IGNORED}

    body = b"".join(handler(request.environ, start_response))
    return answer["status"], answer["headers"], body


def _same_but_request_id(full, short):
    assert full[:2] == short[:2]
    if not full[1].get("content-type", "").startswith("application/json"):
        assert full[2] == short[2]
        return
    first, second = json.loads(full[2] or b"null"), json.loads(short[2] or b"null")
    for body in (first, second):
        if isinstance(body, dict):
            body.pop("request_id", None)
            body.pop("latency_ms", None)
    assert first == second


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/api/v1/models/iris-clf/predict", {"instances": [IRIS_ROW]}),
        ("post", "/api/v1/models/iris-clf/predict", {"instances": [{"x": 1}]}),
        ("post", "/api/v1/models/iris-clf/versions/1/predict", {"inputs": [list(IRIS_ROW.values())]}),
        ("post", "/api/v1/models/iris-clf/invocations", {"instances": [IRIS_ROW]}),
        ("post", "/api/v1/models/nope/predict", {"instances": [IRIS_ROW]}),
        ("get", "/api/v1/models/iris-clf/ping", None),
        ("get", "/v2/health/live", None),
        ("get", "/v2/models/iris-clf", None),
        ("get", "/v2/nothing-here", None),
        ("get", "/health", None),
    ],
)
def test_prediction_paths_answer_as_through_the_full_chain(production, settings, method, path, body):
    settings.SERVING_DEFAULT_MODEL = "iris-clf"
    assert PREDICTION_PATHS.match(path)
    factory = RequestFactory()
    make = (lambda: factory.post(path, body, content_type="application/json")) if body else (lambda: factory.get(path))
    full, short = WSGIHandler(), PredictionHandler()
    _same_but_request_id(_call(full, make()), _call(short, make()))


def test_only_prediction_paths_take_the_short_chain():
    for path in ("/api/v1/models/iris-clf/predict", "/v2", "/v2/models/x/infer", "/predict", "/health"):
        assert PREDICTION_PATHS.match(path), path
    for path in ("/admin/", "/static/admin/css/base.css", "/api/v1/models", "/api/v1/runs", "/metrics", "/api/docs/"):
        assert not PREDICTION_PATHS.match(path), path
