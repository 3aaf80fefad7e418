"""Hand-made hostile input on every route of the URLconf: a NUL byte in the path or the query, integers
past 64 bits and non-integers for pagination, JSON nested 100,000 deep, a body over the limit. Each gets
a 4xx with a JSON body (under /api/ and /v2/), never a 500 or Django's HTML page."""

import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.authtoken.models import Token

from core.errors import is_api_path

DEEP_JSON = b"[" * 100_000 + b"]" * 100_000


def _routes(patterns=None, prefix=""):
    """Every concrete route of the URLconf, its parameters filled: NUL bytes in the string ones."""
    patterns = get_resolver().url_patterns if patterns is None else patterns
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _routes(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            yield route


def _fill(route, value):
    if route.startswith("^") or "(?P" in route:
        return None  # the admin's regex routes: covered by Django's own tests
    route = re.sub(r"<int:\w+>", "1", route)
    route = re.sub(r"<(?:str|slug|path):\w+>|<\w+>", value, route)
    return "/" + route


@pytest.fixture
def token_client(django_user_model, serving):
    from rest_framework.test import APIClient

    admin = django_user_model.objects.create_superuser("root", password="pw-root-1")
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=admin).key}")
    return client


def _assert_refused(response, path):
    unavailable = response.status_code == 503 and path in ("/health", "/v2/health/ready")  # no model loaded
    assert response.status_code < 500 or unavailable, (path, response.status_code, response.content[:300])
    if is_api_path(path) and path != "/api/schema/" and response.status_code >= 400:
        assert response["Content-Type"].startswith("application/json"), (path, response.content[:200])
        assert "error" in response.json(), (path, response.content[:200])


ROUTES = sorted({p for p in (_fill(r, "a%00b") for r in _routes()) if p and not p.startswith("/admin/")})


@pytest.mark.django_db
@pytest.mark.parametrize("path", ROUTES)
def test_nul_bytes_huge_integers_and_deep_json_on_every_route(token_client, path):
    for method in ("get", "post", "put", "patch", "delete"):
        send = getattr(token_client, method)
        _assert_refused(send(path), path)
        _assert_refused(send(path + "?q=%00&limit=99999999999999999999999&offset=x&name=a%00b"), path)
        _assert_refused(send(path + "?limit=1e3&offset=-1"), path)
        if method in ("post", "put", "patch"):
            _assert_refused(send(path, DEEP_JSON, content_type="application/json"), path)
            _assert_refused(send(path, b'{"name": "a\\u0000b", "x": "\x00"}', content_type="application/json"), path)


@pytest.mark.django_db
def test_pagination_refuses_what_it_cannot_honour(token_client):
    for query, field in (
        ("offset=x", "offset"),
        ("offset=-1", "offset"),
        ("limit=99999999999999999999999", "limit"),
        ("limit=0", "limit"),
        ("offset=99999999999999999999999", "offset"),
    ):
        response = token_client.get(f"/api/v1/audit-log?{query}")
        assert response.status_code == 400, (query, response.content)
        assert response.json()["field"] == field
    assert token_client.get("/api/v1/audit-log?limit=2&offset=1").status_code == 200


@pytest.mark.django_db
def test_nul_bytes_and_deep_json_are_named_400s(token_client):
    response = token_client.post("/api/v1/models/a%00b/predict", {"instances": []}, format="json")
    assert (response.status_code, response.json()["field"]) == (400, "path")
    response = token_client.get("/api/v1/audit-log?q=%00")
    assert (response.status_code, response.json()["field"]) == (400, "query")
    response = token_client.post("/api/v1/runs", DEEP_JSON, content_type="application/json")
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["error"]
    response = token_client.post("/api/v1/runs", {"experiment": "e\x00", "dataset": "iris"}, format="json")
    assert response.status_code == 400
    assert "NUL" in response.json()["error"]


@pytest.mark.django_db
def test_a_100_mb_body_is_a_json_refusal(token_client):
    body = b'{"a": "' + b"x" * (100 * 1024 * 1024) + b'"}'
    for path, status in (("/api/v1/runs", 413), ("/api/v1/models/churn/predict", 400), ("/v2/models/churn/infer", 400)):
        response = token_client.post(path, body, content_type="application/json")
        assert response.status_code == status, (path, response.status_code, response.content[:200])
        assert response.json()["field"] == "body"
    # A form body over the limit is refused by Django itself before any view: JSON too.
    response = token_client.post("/api/v1/datasets", body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 413, response.content[:200]
    assert response.json()["field"] == "body"


@pytest.mark.django_db(transaction=True)
def test_db_backed_endpoints_answer_503_while_the_database_is_down(django_user_model):
    from django.db import connection
    from rest_framework.test import APIClient

    admin = django_user_model.objects.create_superuser("root", password="pw-root-1")
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(admin)
    settings_dict, saved = connection.settings_dict, dict(connection.settings_dict)
    connection.close()
    if connection.vendor == "postgresql":
        settings_dict["PORT"] = "1"  # nothing listens there: every new connection is refused
    else:
        settings_dict["NAME"] = "/nonexistent/dir/db.sqlite3"
    try:
        for path in ("/api/v1/audit-log", "/api/v1/runs", "/api/v1/models"):
            response = client.get(path)
            assert response.status_code == 503, (path, response.content[:200])
            assert response["Retry-After"] == "5"
            assert "database is unavailable" in response.json()["error"]
    finally:
        connection.close()
        settings_dict.update(saved)
    assert client.get("/api/v1/audit-log").status_code == 200  # back without a restart
