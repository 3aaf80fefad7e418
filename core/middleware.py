"""Requests the database cannot serve: refused before a view runs (NUL bytes), or answered 503 while it is down."""

import logging

from django.db import InterfaceError, OperationalError
from django.http import JsonResponse

logger = logging.getLogger(__name__)


class RefuseNulBytesMiddleware:
    """A NUL byte in the path or the query string is a 400 naming which.

    PostgreSQL refuses NUL in text, so one reaching a lookup (`/api/v1/models/a%00b/predict`,
    `?q=%00`) was a 500; no name, id or filter of ours can hold one."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "\x00" in request.path_info:
            return JsonResponse({"error": "NUL characters are not allowed in the path", "field": "path"}, status=400)
        if "%00" in request.META.get("QUERY_STRING", ""):
            return JsonResponse({"error": "NUL characters are not allowed in the query", "field": "query"}, status=400)
        return self.get_response(request)


class DatabaseUnavailableMiddleware:
    """The database down or its connection lost (OperationalError, InterfaceError) is a 503 with Retry-After,
    not a 500: the request may succeed once it is back, and load balancers and clients treat it so. Django
    drops the broken connection at the end of the request, so the next one connects afresh."""

    RETRY_AFTER_SECONDS = 5

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        logger.warning("database unavailable for %s %s: %s", request.method, request.path, exception)
        response = JsonResponse({"error": "the database is unavailable; try again shortly"}, status=503)
        response["Retry-After"] = str(self.RETRY_AFTER_SECONDS)
        return response
