"""GET /metrics, open or behind a bearer token (METRICS_TOKEN), as Prometheus' `authorization` sends it."""

import hmac

from django.conf import settings
from django.http import JsonResponse
from django_prometheus.exports import ExportToDjangoView


def metrics_view(request):
    """The Prometheus exposition of every process's metrics; 401 without the token when METRICS_TOKEN is set."""
    token = settings.METRICS_TOKEN
    if token:
        given = request.META.get("HTTP_AUTHORIZATION", "")
        if not (given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), token.encode())):
            response = JsonResponse({"error": "metrics need Authorization: Bearer <METRICS_TOKEN>"}, status=401)
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    return ExportToDjangoView(request)
