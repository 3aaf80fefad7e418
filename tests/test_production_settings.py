"""Production settings: with DEBUG=0, a SECRET_KEY and ALLOWED_HOSTS and nothing else, `check --deploy` has
nothing to say (HTTPS-only by default); each setting is read from the environment; behind a TLS proxy
(SECURE_PROXY_SSL_HEADER) HTTPS requests are not redirected, and probes and /metrics never are."""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = [
    "SECURE_SSL_REDIRECT",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SECURE_PROXY_SSL_HEADER",
]


def _production_env(**extra):
    """DEBUG=0, a SECRET_KEY and ALLOWED_HOSTS, and nothing else of ours (a variable of the test run, such
    as DATABASE_URL or HTTPS_ONLY, must not hide a warning)."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "MLOPS_VAR_DIR": os.environ.get("MLOPS_VAR_DIR", str(ROOT / "var")),
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "mlops.example.com",
        **extra,
    }


def _production(**extra):
    """In a process of its own with that environment: the HTTPS settings and what `check --deploy` says."""
    code = f"""
import io, json, django
django.setup()
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import SystemCheckError
try:
    call_command("check", deploy=True, fail_level="WARNING", stdout=io.StringIO())
    issues = ""
except SystemCheckError as error:
    issues = str(error)
print(json.dumps({{"settings": {{name: getattr(settings, name, None) for name in {SETTINGS!r}}}, "issues": issues}}))
"""
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**_production_env(**extra), "DJANGO_SETTINGS_MODULE": "mlops_site.settings"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_check_deploy_has_no_warning_with_only_the_required_settings():
    production = _production()
    assert production["issues"] == ""
    assert production["settings"] == {
        "SECURE_SSL_REDIRECT": True,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_HSTS_SECONDS": 31_536_000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_HSTS_PRELOAD": True,
        "SECURE_PROXY_SSL_HEADER": None,
    }


def test_each_setting_is_read_from_the_environment_and_check_deploy_sees_it():
    production = _production(
        HTTPS_ONLY="0", CSRF_COOKIE_SECURE="1", SECURE_HSTS_SECONDS="3600", SECURE_PROXY_SSL_HEADER="1"
    )
    assert production["settings"] == {
        "SECURE_SSL_REDIRECT": False,
        "SESSION_COOKIE_SECURE": False,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_HSTS_SECONDS": 3600,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": False,
        "SECURE_HSTS_PRELOAD": False,
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
    }
    # The warnings main gave before (W008, W012), and HSTS's own two; not those of what is on.
    for warning in ("security.W008", "security.W012", "security.W005", "security.W021"):
        assert warning in production["issues"], warning
    for warning in ("security.W004", "security.W016"):
        assert warning not in production["issues"], warning


@pytest.fixture
def https_only(settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31_536_000
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.ALLOWED_HOSTS = ["mlops.example.com", "testserver"]
    return settings


@pytest.mark.django_db
def test_behind_the_proxy_https_is_served_and_http_redirected(client, https_only):
    plain = client.get("/admin/login/", HTTP_HOST="mlops.example.com")
    assert plain.status_code == 301
    assert plain["Location"] == "https://mlops.example.com/admin/login/"
    forwarded = client.get("/admin/login/", HTTP_HOST="mlops.example.com", HTTP_X_FORWARDED_PROTO="https")
    assert forwarded.status_code == 200
    assert forwarded["Strict-Transport-Security"] == "max-age=31536000"


@pytest.mark.django_db
def test_probes_and_metrics_are_not_redirected(client, https_only):
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.get("/v2/health/ready").status_code in (200, 503)  # answered, not redirected
