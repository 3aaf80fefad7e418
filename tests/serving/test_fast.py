"""Predictions answered below Django (serving.fast) answer, log and count exactly as Django's full chain does,
and everything they cannot answer from memory reaches Django untouched."""

import json

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.test import RequestFactory
from prometheus_client import REGISTRY
from rest_framework.authtoken.models import Token

from serving.fast import FastPredictions
from serving.models import PredictionLog
from serving.runtime import ModelNotServable
from tests.serving.conftest import IRIS_ROW

pytestmark = pytest.mark.django_db

PATH = "/api/v1/models/iris-clf/predict"
VARYING = {"x-request-id", "date", "content-length"}  # the length: latency_ms differs


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


class CountingDjango:
    """Django's handler, counting the requests that reach it."""

    def __init__(self):
        self.handler, self.calls = WSGIHandler(), 0

    def __call__(self, environ, start_response):
        self.calls += 1
        return self.handler(environ, start_response)


@pytest.fixture
def paths(production, serving):
    """(the fast path in front of Django, Django alone), with the route loaded as a serving process has it
    after its first request."""
    django = CountingDjango()
    serving.route("iris-clf")
    return FastPredictions(django), django


def _environ(body, *, raw=None, headers=None, path=PATH, secure=False):
    data = raw if raw is not None else json.dumps(body)
    extra = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in (headers or {}).items()}
    return RequestFactory().post(path, data, content_type="application/json", secure=secure, **extra).environ


def _call(app, environ):
    answer = {}

    def start_response(status, headers, exc_info=None):
        answer["status"], answer["headers"] = status, headers

    body = b"".join(app(environ, start_response))
    headers = {k.lower(): v for k, v in answer["headers"]}
    return answer["status"], headers, json.loads(body) if body else None


def _without_varying(answer):
    status, headers, body = answer
    body = dict(body)
    body.pop("request_id", None)
    body.pop("latency_ms", None)
    return status, {k: v for k, v in headers.items() if k not in VARYING}, body


def _django_http_metrics():
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for metric in REGISTRY.collect()
        if metric.name.startswith(("django_http_", "prediction_"))
        for sample in metric.samples
        if not sample.name.endswith(("_sum", "_created"))
        and "latency" not in sample.name  # the buckets a time falls in may differ
    }


def _delta(before, after):
    return {key: value - before.get(key, 0) for key, value in after.items() if value != before.get(key, 0)}


def _both(paths, make_environ):
    """The same request through the fast path and through Django: (fast answer, Django's answer, and the
    metrics each moved)."""
    fast, django = paths
    before = _django_http_metrics()
    calls = django.calls
    first = _call(fast, make_environ())
    assert django.calls == calls, "the fast path should have answered this itself"
    middle = _django_http_metrics()
    second = _call(django, make_environ())
    after = _django_http_metrics()
    return first, second, _delta(before, middle), _delta(middle, after)


@pytest.mark.parametrize(
    ("body", "raw", "status"),
    [
        ({"instances": [IRIS_ROW, IRIS_ROW]}, None, 200),
        ({"inputs": [list(IRIS_ROW.values())]}, None, 200),
        ({"instances": [{**IRIS_ROW, "petal_width_cm": "wide"}]}, None, 422),
        ({"instances": [{"sepal_length_cm": 1.0}]}, None, 422),
        ({"rows": []}, None, 400),
        (None, '{"instances": [', 400),
        (None, '{"instances": [{"sepal_length_cm": NaN}]}', 400),
    ],
)
def test_answers_errors_log_rows_and_metrics_are_django_s(paths, body, raw, status):
    fast, django, fast_counted, django_counted = _both(paths, lambda: _environ(body, raw=raw))

    assert fast[0].startswith(str(status))
    assert _without_varying(fast) == _without_varying(django)
    assert fast_counted == django_counted
    first, second = (answer[1]["x-request-id"] for answer in (fast, django))
    rows = PredictionLog.objects.order_by("id")
    assert [r.request_id for r in rows] == [first] * (rows.count() // 2) + [second] * (rows.count() // 2)
    keep = ("row", "model_name", "version", "deployment_mode", "inputs", "prediction", "probabilities", "error")
    assert [[getattr(r, f) for f in keep] for r in rows if r.request_id == first] == [
        [getattr(r, f) for f in keep] for r in rows if r.request_id == second
    ]


def test_a_token_this_process_knows_and_the_headers_of_a_request_without_a_session(paths, application, settings):
    settings.SERVING_REQUIRE_AUTH = True
    key = Token.objects.create(user=application).key
    fast_app, django = paths
    make = lambda: _environ({"instances": [IRIS_ROW]}, headers={"Authorization": f"Token {key}"})  # noqa: E731

    unknown = _call(fast_app, make())  # first sight of the token: Django looks it up, and it is remembered
    assert django.calls == 1
    fast, full, fast_counted, django_counted = _both(paths, make)

    assert unknown[0] == fast[0] == "200 OK"
    assert _without_varying(fast) == _without_varying(full)
    assert "vary" not in fast[1]  # no session looked at
    assert fast_counted == django_counted


def test_anonymous_answers_say_they_vary_by_cookie_as_django_s_do(paths):
    fast, full, *_ = _both(paths, lambda: _environ({"instances": [IRIS_ROW]}))
    assert fast[1]["vary"] == full[1]["vary"] == "Cookie"


def test_a_client_request_id_becomes_the_prefix_of_a_unique_one(paths):
    fast, django = paths
    given = _call(fast, _environ({"instances": [IRIS_ROW]}, headers={"X-Request-ID": "checkout-42"}))
    junk = _call(fast, _environ({"instances": [IRIS_ROW]}, headers={"X-Request-ID": "bad id!"}))
    assert django.calls == 0
    assert given[1]["x-request-id"].startswith("checkout-42.")
    assert len(given[1]["x-request-id"]) == 24
    assert given[2]["request_id"] == given[1]["x-request-id"]
    assert junk[1]["x-request-id"].count(".") == 1
    assert len(junk[1]["x-request-id"]) == 45


def test_over_the_body_limit_is_refused_before_the_body_is_read(paths, settings):
    settings.SERVING_MAX_BODY_BYTES = 50
    fast, full, *_ = _both(paths, lambda: _environ({"instances": [IRIS_ROW]}))
    assert fast[0] == full[0] == "400 Bad Request"
    assert fast[2]["field"] == full[2]["field"] == "body"


@pytest.mark.parametrize(
    "case",
    [
        "cookie",
        "query string",
        "unknown token",
        "basic auth",
        "past the failure limit",
        "past the rate",
        "route not loaded",
        "a refused version",
        "no token where one is required",
        "insecure with SSL redirect",
        "a host not allowed",
        "another route",
    ],
)
def test_what_needs_django_reaches_django_with_its_body(paths, application, settings, serving, case):
    fast, django = paths
    headers, path, secure = {}, PATH, False
    if case == "cookie":
        headers["Cookie"] = "sessionid=abc"
    elif case == "query string":
        path = PATH + "?environment=production"
    elif case == "unknown token":
        settings.SERVING_REQUIRE_AUTH = True
        headers["Authorization"] = "Token " + Token.objects.create(user=application).key
    elif case == "basic auth":
        headers["Authorization"] = "Basic YXBwOnB3LWFwcC0x"
    elif case == "past the failure limit":
        from django.core.cache import cache

        from core.auth import _failure_key

        settings.AUTH_FAILURE_LIMIT = 1
        cache.set(_failure_key("127.0.0.1", int(__import__("time").time() // settings.AUTH_FAILURE_WINDOW)), 5)
        headers["Authorization"] = "Token nope"
    elif case == "past the rate":
        settings.SERVING_THROTTLE_RATE = "1/minute"
        _call(fast, _environ({"instances": [IRIS_ROW]}))
    elif case == "route not loaded":
        serving._routes.clear()
    elif case == "a refused version":  # remembered, as runtime.route remembers a file that fails its check
        serving._routes[("iris-clf", "production")] = ModelNotServable("iris-clf v1 cannot be served: tampered")
    elif case == "no token where one is required":
        settings.SERVING_REQUIRE_AUTH = True
    elif case == "insecure with SSL redirect":
        settings.SECURE_SSL_REDIRECT = True
    elif case == "a host not allowed":
        headers["Host"] = "evil.example"
    elif case == "another route":
        path = "/api/v1/models/iris-clf/versions/1/predict"
    calls = django.calls

    answer = _call(fast, _environ({"instances": [IRIS_ROW]}, headers=headers, path=path, secure=secure))

    assert django.calls == calls + 1
    if case in ("cookie", "query string", "unknown token", "route not loaded", "another route"):
        assert answer[0] == "200 OK", answer  # Django read the body the client sent
    if case == "a refused version":
        assert answer[::2] == ("409 Conflict", {"error": "iris-clf v1 cannot be served: tampered"})


def test_anonymous_clients_are_counted_by_address_as_drf_counts_them(paths, settings):
    import time

    from serving import access

    fast, django = paths
    settings.SERVING_THROTTLE_RATE = "2/hour"
    access._counts.clear()
    if 3600 - time.time() % 3600 < 10:  # fixed windows: don't start a count that the hour's end would reset
        time.sleep(3600 - time.time() % 3600 + 0.1)

    def ask(address, forwarded=None):
        environ = _environ({"instances": [IRIS_ROW]}, headers={"X-Forwarded-For": forwarded} if forwarded else None)
        environ["REMOTE_ADDR"] = address
        return _call(fast, environ)[0][:3]

    assert [ask("10.0.0.1") for _ in range(3)] == ["200", "200", "429"]
    assert django.calls == 1  # the refusal is Django's, with its Retry-After
    assert [ask("10.0.0.2") for _ in range(2)] == ["200", "200"]
    assert [ask("10.0.0.2", forwarded="192.0.2.7") for _ in range(3)] == ["200", "200", "429"]
    assert django.calls == 2  # each refusal, and nothing else
