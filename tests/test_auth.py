"""API authentication under attack and revocation: basic auth off by default, failures rate-limited per
client, a deleted token or deactivated user refused on the very next request, /metrics behind a token,
demo accounts refused with DEBUG off, and a prediction's request id unique even when the client reuses one."""

import base64
import contextlib

import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def auth_state(settings, tmp_path):
    settings.AUTH_SIGNAL_FILE = str(tmp_path / "auth-generation")
    cache.clear()
    yield
    with contextlib.suppress(Exception):  # a test may point the cache at a server that is down
        cache.clear()


def _client(**extra):
    return APIClient(raise_request_exception=False, **extra)


def test_basic_auth_is_off_for_the_api_by_default(auditor):
    credentials = base64.b64encode(b"audrey:pw-audrey-1").decode()
    response = _client().get("/api/v1/audit-log", HTTP_AUTHORIZATION=f"Basic {credentials}")
    assert response.status_code == 401
    token = Token.objects.create(user=auditor).key
    assert _client().get("/api/v1/audit-log", HTTP_AUTHORIZATION=f"Token {token}").status_code == 200


def test_authentication_failures_are_limited_per_client(settings, auditor):
    settings.AUTH_FAILURE_LIMIT = 3
    settings.AUTH_FAILURE_WINDOW = 60
    token = Token.objects.create(user=auditor).key
    attacker, neighbour = _client(REMOTE_ADDR="10.0.0.66"), _client(REMOTE_ADDR="10.0.0.7")
    for _ in range(3):
        assert attacker.get("/api/v1/audit-log", HTTP_AUTHORIZATION="Token wrong").status_code == 401
    refused = attacker.get("/api/v1/audit-log", HTTP_AUTHORIZATION="Token wrong")
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert "too many failed authentications" in refused.json()["error"]
    # Until the window ends the client is refused even with a good token: guessing gains nothing.
    assert attacker.get("/api/v1/audit-log", HTTP_AUTHORIZATION=f"Token {token}").status_code == 429
    assert attacker.post("/api/v1/models/x/predict", {}, format="json", HTTP_AUTHORIZATION="Token w").status_code == 429
    # Another client is not affected.
    assert neighbour.get("/api/v1/audit-log", HTTP_AUTHORIZATION=f"Token {token}").status_code == 200


def test_a_deleted_token_and_a_deactivated_user_are_refused_on_the_next_request(
    auditor, django_user_model, django_capture_on_commit_callbacks
):
    token = Token.objects.create(user=auditor)
    client = _client()
    header = {"HTTP_AUTHORIZATION": f"Token {token.key}"}
    assert client.get("/api/v1/audit-log", **header).status_code == 200  # remembered from now on
    with django_capture_on_commit_callbacks(execute=True):
        token.delete()
    assert client.get("/api/v1/audit-log", **header).status_code == 401

    other = django_user_model.objects.create_user("olga", password="pw-olga-1")
    other.groups.add(*auditor.groups.all())
    other_token = Token.objects.create(user=other).key
    header = {"HTTP_AUTHORIZATION": f"Token {other_token}"}
    assert client.get("/api/v1/audit-log", **header).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        other.is_active = False
        other.save()
    assert client.get("/api/v1/audit-log", **header).status_code == 401


def test_a_revoked_role_takes_effect_on_the_next_request(auditor, django_capture_on_commit_callbacks):
    token = Token.objects.create(user=auditor).key
    header = {"HTTP_AUTHORIZATION": f"Token {token}"}
    client = _client()
    assert client.get("/api/v1/audit-log", **header).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        auditor.groups.clear()
    assert client.get("/api/v1/audit-log", **header).status_code == 403


def test_metrics_can_require_a_token(settings, client):
    assert client.get("/metrics").status_code == 200  # open by default (a private network)
    settings.METRICS_TOKEN = "scrape-me"
    refused = client.get("/metrics")
    assert refused.status_code == 401
    assert refused["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    answered = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-me")
    assert answered.status_code == 200
    assert b"django_http_requests" in answered.content


def test_setup_demo_refuses_demo_accounts_with_debug_off(settings, django_user_model):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="--allow-demo-accounts"):
        call_command("setup_demo")
    assert not django_user_model.objects.exists()


def test_a_reused_client_request_id_gets_a_unique_prediction_id(production, serving, settings):
    from serving.models import PredictionLog
    from tests.serving.conftest import IRIS_ROW

    settings.SERVING_REQUIRE_AUTH = False
    client = _client()
    ids = []
    for _ in range(2):
        response = client.post(
            "/api/v1/models/iris-clf/predict", {"instances": [IRIS_ROW]}, format="json", HTTP_X_REQUEST_ID="order-42"
        )
        assert response.status_code == 200
        assert response["X-Request-ID"] == response.json()["request_id"]
        ids.append(response.json()["request_id"])
    assert ids[0] != ids[1]
    assert all(request_id.startswith("order-42.") for request_id in ids)
    assert PredictionLog.objects.filter(request_id=ids[0]).count() == 1
    # Without a client id the server's own is used as it is.
    plain = client.post("/api/v1/models/iris-clf/predict", {"instances": [IRIS_ROW]}, format="json")
    assert "." not in plain.json()["request_id"]


def test_the_failure_limit_fails_open_when_its_cache_is_down(settings, auditor):
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
    }
    token = Token.objects.create(user=auditor).key
    assert _client().get("/api/v1/audit-log", HTTP_AUTHORIZATION="Token wrong").status_code == 401
    assert _client().get("/api/v1/audit-log", HTTP_AUTHORIZATION=f"Token {token}").status_code == 200


def test_the_admin_sign_in_is_limited_per_client_before_any_password_is_checked(settings, auditor, monkeypatch):
    """A wrong password costs the hasher's deliberate fraction of a second: past AUTH_FAILURE_LIMIT the admin's
    sign-in page refuses the client (429, Retry-After, the reason on the page) without checking the password,
    even a right one, until the window ends; another client signs in as usual."""
    settings.AUTH_FAILURE_LIMIT = 3
    settings.AUTH_FAILURE_WINDOW = 60
    attacker, colleague = Client(REMOTE_ADDR="10.0.0.66"), Client(REMOTE_ADDR="10.0.0.7")
    wrong = {"username": "audrey", "password": "guess", "next": "/admin/"}
    for _ in range(3):
        response = attacker.post("/admin/login/", wrong)
        assert response.status_code == 200
        assert "Please enter the correct username and password" in response.content.decode()

    checked = []
    monkeypatch.setattr("django.contrib.auth.authenticate", lambda *a, **k: checked.append(k))
    monkeypatch.setattr("django.contrib.auth.forms.authenticate", lambda *a, **k: checked.append(k))
    refused = attacker.post("/admin/login/", {**wrong, "password": "pw-audrey-1"})
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert "Too many failed sign-ins from this address" in refused.content.decode()
    assert checked == []  # no password hashed for a client past its limit
    assert "_auth_user_id" not in attacker.session
    monkeypatch.undo()

    response = colleague.post("/admin/login/", {**wrong, "password": "pw-audrey-1"})
    assert response.status_code == 302
    assert response["Location"] == "/admin/"
