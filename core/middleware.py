"""Refuse, before any view runs, request parts no view can use and the database would choke on."""

from django.http import JsonResponse


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
