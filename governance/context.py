"""The request an action came from (request id, client IP), for the audit trail, without passing it everywhere."""

import contextvars
import re
import uuid

_request_context = contextvars.ContextVar("request_context", default=None)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def current_request():
    """(request_id, ip_address) of the HTTP request being handled, or ("", None) outside one."""
    request = _request_context.get()
    if request is None:
        return "", None
    return request.request_id, request.META.get("REMOTE_ADDR") or None


def current_user():
    """The signed-in user of the HTTP request being handled, or None."""
    request = _request_context.get()
    user = getattr(request, "user", None)
    return user if user is not None and user.is_authenticated else None


def request_id_from(given: str) -> str:
    """The client's X-Request-ID if well-formed, else a new id."""
    return given if _REQUEST_ID.match(given) else uuid.uuid4().hex


class RequestContextMiddleware:
    """Give every request an id (the client's X-Request-ID if well-formed, else a new one) and echo it back."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.request_id = request_id_from(request.headers.get("X-Request-ID", ""))
        token = _request_context.set(request)
        try:
            response = self.get_response(request)
        finally:
            _request_context.reset(token)
        response["X-Request-ID"] = request.request_id
        return response
