"""Our API's predictions answered below Django, when the request needs nothing only Django has.

`POST /api/v1/models/NAME/predict` with no query string and no session cookie, whose token this process
already knows (or no token, where SERVING_REQUIRE_AUTH is off), for a model whose route this process
already holds: the steps of the DRF view, with the same functions in the same order (the failure
limit, the remembered token, the throttle, the body limit, JSON, `predict()` with its routing, checks,
metrics and log hand-off, the answer, the error answers and their log rows), and the same headers
(the security middleware's and X-Frame-Options, computed by those middleware once per scheme) and
django_prometheus counters, without building Django's request and response, running the middleware
chain, resolving the URL or DRF's dispatch: the larger part of a one-row prediction's CPU
(README, "What a prediction costs").

Everything else goes to Django with the body as it came, before anything is counted: a token seen for
the first time this minute, a route not loaded yet (both need the database), a session, a query
string, a Host not in ALLOWED_HOSTS, a client past its failure limit or its rate, a request the
security middleware would redirect. tests/serving/test_fast.py compares the answers, headers, log
rows and metrics of both paths.
"""

import io
import time
from http import HTTPStatus
from types import SimpleNamespace

import orjson
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware
from django_prometheus.middleware import Metrics
from rest_framework.exceptions import Throttled

from core.auth import CachedTokenAuthentication, auth_failures_check
from core.errors import ApplicationError, api_exception_handler
from governance.context import request_id_from
from serving.access import prediction_allowed, prediction_ident
from serving.api import body_length_check, json_loads, native_answer, native_payload, prediction_request_id
from serving.predict import error_logged, predict
from serving.runtime import runtime

_PREFIX, _SUFFIX = "/api/v1/models/", "/predict"
_VIEW = "model-predict"  # the URL's name: django_prometheus labels by it
_ALLOW = "POST, OPTIONS"  # what DRF says the view allows


def _model_name(environ):
    """NAME of a POST /api/v1/models/NAME/predict this path can take, else None."""
    if environ.get("REQUEST_METHOD") != "POST" or environ.get("QUERY_STRING"):
        return None
    if settings.SESSION_COOKIE_NAME + "=" in environ.get("HTTP_COOKIE", ""):
        return None  # a signed-in session (and its CSRF check) is Django's
    path = environ.get("PATH_INFO", "")
    if not (path.startswith(_PREFIX) and path.endswith(_SUFFIX)):
        return None
    name = path[len(_PREFIX) : -len(_SUFFIX)]
    return name if name and "/" not in name and "\x00" not in name else None


def _secure(environ):
    """HttpRequest.is_secure() for this environ (SECURE_PROXY_SSL_HEADER, else the WSGI scheme)."""
    if settings.SECURE_PROXY_SSL_HEADER:
        header, secure_value = settings.SECURE_PROXY_SSL_HEADER
        value = environ.get(header)
        if value is not None:
            return value.split(",", 1)[0].strip() == secure_value
    return environ.get("wsgi.url_scheme") == "https"


class _Headers:
    """The headers the middleware chain adds to a prediction's JSON answer, computed by the middleware
    themselves once per (scheme, whether a session was looked at) and kept until settings change."""

    def __init__(self):
        self._made = {}

    def get(self, secure, anonymous):
        key = (secure, anonymous, settings.SECURE_HSTS_SECONDS, settings.X_FRAME_OPTIONS)
        headers = self._made.get(key)
        if headers is None:
            request = HttpRequest()
            request.META = {"wsgi.url_scheme": "https" if secure else "http", "SERVER_NAME": "x", "SERVER_PORT": "1"}
            if settings.SECURE_PROXY_SSL_HEADER:
                header, secure_value = settings.SECURE_PROXY_SSL_HEADER
                request.META[header] = secure_value if secure else ""
            response = HttpResponse(content_type="application/json")
            response["Allow"] = _ALLOW
            if anonymous:  # DRF's session authentication looked at the (empty) session: SessionMiddleware says so
                response["Vary"] = "Cookie"
            response = SecurityMiddleware(lambda r: response).process_response(request, response)
            response = XFrameOptionsMiddleware(lambda r: response).process_response(request, response)
            headers = list(response.items())
            self._made[key] = headers
        return headers


class _Counters:
    """django_prometheus's per-request metrics for this view, as its two middleware count them, with the
    labelled children looked up once."""

    def __init__(self):
        self._children = {}

    def _child(self, metric, **labels):
        key = (metric, *labels.values())
        child = self._children.get(key)
        if child is None:
            child = getattr(Metrics.get_instance(), metric).labels(**labels)
            self._children[key] = child
        return child

    def count(self, environ, *, started, length, status, body_bytes, transport):
        metrics = Metrics.get_instance()
        status = str(status)
        metrics.requests_total.inc()
        self._child("requests_by_method", method="POST").inc()
        self._child("requests_by_transport", transport=transport).inc()
        if environ.get("HTTP_X_REQUESTED_WITH") == "XMLHttpRequest":
            metrics.requests_ajax.inc()
        metrics.requests_body_bytes.observe(length)
        self._child("requests_by_view_transport_method", view=_VIEW, transport=transport, method="POST").inc()
        self._child("responses_by_templatename", templatename="None").inc()  # a DRF Response has template_name
        self._child("responses_by_status", status=status).inc()
        self._child("responses_by_status_view_method", status=status, view=_VIEW, method="POST").inc()
        self._child("responses_by_charset", charset="utf-8").inc()
        metrics.responses_body_bytes.observe(body_bytes)
        elapsed = time.perf_counter() - started
        self._child("requests_latency_by_view_method", view=_VIEW, method="POST").observe(elapsed)
        metrics.responses_total.inc()
        metrics.requests_latency_before.observe(elapsed)


class FastPredictions:
    """WSGI middleware: answers the predictions it can (see the module's doc), hands the rest to `django`."""

    def __init__(self, django):
        self.django = django
        self.headers = _Headers()
        self.counters = _Counters()

    def __call__(self, environ, start_response):
        name = _model_name(environ)
        answer = self._answer(name, environ) if name is not None else None
        if answer is None:
            return self.django(environ, start_response)
        status, headers, body = answer
        start_response(status, headers)
        return [body]

    def _user(self, environ):
        """The request's user if it can be told from memory: (True, user or None); (False, None) otherwise."""
        authorization = environ.get("HTTP_AUTHORIZATION")
        if authorization is None:
            return (not settings.SERVING_REQUIRE_AUTH), None
        keyword, _, key = authorization.partition(" ")
        if keyword.lower() != "token" or not key or " " in key:
            return False, None
        remembered = CachedTokenAuthentication.remembered(key)
        if remembered is None or not remembered[0].is_active:
            return False, None
        return True, remembered[0]

    def _answer(self, name, environ):
        started = time.perf_counter()
        try:
            length = int(environ.get("CONTENT_LENGTH") or "")
        except ValueError:
            return None
        secure = _secure(environ)
        if settings.SECURE_SSL_REDIRECT and not secure:
            return None  # the security middleware redirects it
        probe = HttpRequest.__new__(HttpRequest)  # get_host() reads META and settings only; no QueryDicts made
        probe.META = environ
        try:
            probe.get_host()  # ALLOWED_HOSTS, as CommonMiddleware checks it
        except DisallowedHost:
            return None
        if "HTTP_AUTHORIZATION" in environ:
            try:
                auth_failures_check(SimpleNamespace(META=environ))
            except Throttled:
                return None
        known, user = self._user(environ)
        if not known or runtime.route_cached(name) is None:
            return None
        # An anonymous client is counted by its address: DRF's get_ident reads REMOTE_ADDR and X-Forwarded-For.
        forwarded = {"x-forwarded-for": environ["HTTP_X_FORWARDED_FOR"]} if "HTTP_X_FORWARDED_FOR" in environ else {}
        client = SimpleNamespace(META=environ, headers=forwarded) if user is None else None
        allowed, _ = prediction_allowed(prediction_ident(user, client))
        if not allowed:
            return None  # Django answers the 429, with its Retry-After
        given = environ.get("HTTP_X_REQUEST_ID")
        request_id = request_id_from(given or "")
        if given is not None:
            request_id = prediction_request_id(request_id)
        try:
            body_length_check(length)
            raw = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(raw)  # Django reads it again if it gets the request after all
            payload, kind = native_payload(json_loads(raw))
            prediction = predict(model_name=name, payload=payload, kind=kind, request_id=request_id, by=user)
        except ApplicationError as exc:
            error_logged(
                model_name=name,
                request_id=request_id,
                error=str(exc),
                latency_ms=(time.perf_counter() - started) * 1000,
            )
            status, body = exc.status_code, orjson.dumps(api_exception_handler(exc, {}).data)
        except DatabaseError:
            return None  # the route moved under this request and its reload met the database: Django answers
        else:
            status, body = 200, orjson.dumps(native_answer(name, prediction))
        headers = [
            *self.headers.get(secure, user is None),
            ("X-Request-ID", request_id),
            ("Content-Length", str(len(body))),
        ]
        self.counters.count(
            environ,
            started=started,
            length=length,
            status=status,
            body_bytes=len(body),
            transport="https" if secure else "http",
        )
        return f"{status} {HTTPStatus(status).phrase}", headers, body
