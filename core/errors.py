"""Domain errors and the one place that turns them into HTTP responses.

Services raise these; the API's exception handler maps them to a status code and
a JSON body naming the field, the admin shows them as messages and the CLI as a
message with a non-zero exit.
"""

from django.conf import settings
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler


class ApplicationError(Exception):
    """An error a user can act on; `field` names the input at fault, if any."""

    status_code = status.HTTP_400_BAD_REQUEST

    def __init__(self, message, *, field=None, extra=None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.extra = extra or {}

    def __str__(self):
        return f"{self.field}: {self.message}" if self.field else self.message


class InvalidInput(ApplicationError):
    status_code = status.HTTP_400_BAD_REQUEST


class NotFound(ApplicationError):
    status_code = status.HTTP_404_NOT_FOUND


class Conflict(ApplicationError):
    """The object is in the wrong state for the action (already decided, archived, changed meanwhile)."""

    status_code = status.HTTP_409_CONFLICT


class NotPermitted(ApplicationError):
    """The user may not do this; the message says which role or rule stops them."""

    status_code = status.HTTP_403_FORBIDDEN


class BrokerUnavailable(ApplicationError):
    """The work was recorded but could not be handed to the workers (the task broker is unreachable); the
    record says so (a run or an upload FAILED, a CRM refresh failed and resumable)."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE


class Unprocessable(ApplicationError):
    """Well-formed input the rules refuse, such as a run below the registration gate."""

    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY


def _first_error(detail, path=()):
    """The first (field path, message) pair of a DRF ValidationError detail."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            return _first_error(value, (*path, str(key)))
    if isinstance(detail, list) and detail:
        return _first_error(detail[0], path)
    return ".".join(path) or None, str(detail)


def api_exception_handler(exc, context):
    """Render every error as {"error": message, "field": name, ...}."""
    if isinstance(exc, ApplicationError):
        body = {"error": exc.message, **exc.extra}
        if exc.field:
            body["field"] = exc.field
        return Response(body, status=exc.status_code)
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, drf_exceptions.ValidationError):
        field, message = _first_error(exc.detail)
        if field == "non_field_errors":
            field = None
        body = {"error": message, "fields": exc.detail}
        if field:
            body["field"] = field
        response.data = body
    elif isinstance(response.data, dict) and "detail" in response.data:
        response.data = {"error": str(response.data["detail"])}
    return response


# Paths whose clients are programs: their errors are JSON, never Django's HTML pages.
_API_PREFIXES = ("/api/", "/v2", "/predict", "/health", "/crm_segment_update", "/metrics")


def is_api_path(path):
    return path.startswith(_API_PREFIXES) and not path.startswith("/api/docs/")


def not_found(request, exception=None):
    """404 for URLs no view matched: JSON for the APIs, Django's page elsewhere."""
    from django.http import JsonResponse
    from django.views.defaults import page_not_found

    if is_api_path(request.path):
        return JsonResponse({"error": f"no endpoint at {request.path}"}, status=404)
    return page_not_found(request, exception)


def bad_request(request, exception=None):
    """A request Django refused before any view (a body over DATA_UPLOAD_MAX_MEMORY_SIZE, too many fields, a
    disallowed host): 413 for a body too large, 400 otherwise, as JSON for the APIs."""
    from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
    from django.http import JsonResponse
    from django.views.defaults import bad_request as django_bad_request

    too_big = isinstance(exception, RequestDataTooBig | TooManyFieldsSent | TooManyFilesSent)
    if is_api_path(request.path):
        if too_big:
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            return JsonResponse({"error": f"the body is over the limit of {limit} bytes", "field": "body"}, status=413)
        return JsonResponse({"error": "bad request"}, status=400)
    return django_bad_request(request, exception)


def server_error(request):
    """500: JSON for the APIs, Django's page elsewhere. Every 500 is a bug; the log has its traceback."""
    from django.http import JsonResponse
    from django.views.defaults import server_error as django_server_error

    if is_api_path(request.path):
        return JsonResponse({"error": "internal error; it has been logged"}, status=500)
    return django_server_error(request)
