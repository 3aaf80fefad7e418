"""/metrics behind a bearer token (METRICS_TOKEN), as Prometheus' `authorization` sends it."""

import hmac

from django.conf import settings
from django.http import JsonResponse


def metrics_token_refusal(request):
    """A 401 when METRICS_TOKEN is set and the request does not carry it; None when it may read the metrics."""
    token = settings.METRICS_TOKEN
    if not token:
        return None
    given = request.META.get("HTTP_AUTHORIZATION", "")
    if given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), token.encode()):
        return None
    response = JsonResponse({"error": "metrics need Authorization: Bearer <METRICS_TOKEN>"}, status=401)
    response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response
