"""Throttling for the prediction APIs, cheap enough for every request.

DRF's throttle keeps every request's timestamp in a cache; here it is a fixed-window counter in
process memory.
"""

import threading
import time

from django.conf import settings
from rest_framework.throttling import BaseThrottle

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _parse_rate(rate):
    count, _, period = rate.partition("/")
    return int(count), _PERIODS[period.strip()[0]]


_counts = {}
_lock = threading.Lock()


def prediction_allowed(ident: str) -> tuple[bool, float]:
    """Count one request of `ident` (a user, or a client address) in the current window: (whether it is within
    SERVING_THROTTLE_RATE, seconds until the window ends)."""
    limit, seconds = _parse_rate(settings.SERVING_THROTTLE_RATE)
    window = int(time.time() // seconds)
    with _lock:
        if len(_counts) > 50_000:
            _counts.clear()
        key = (ident, seconds, window)
        count = _counts.get(key, 0) + 1
        _counts[key] = count
        _counts.pop((ident, seconds, window - 1), None)
    return count <= limit, (window + 1) * seconds - time.time()


def prediction_ident(user, request) -> str:
    """Whom a prediction request is counted against: the signed-in user, else the client's address."""
    if user is not None and user.is_authenticated:
        return f"u{user.pk}"
    return BaseThrottle().get_ident(request)


class PredictionRateThrottle(BaseThrottle):
    """At most SERVING_THROTTLE_RATE requests per token (or client address) per worker process, in fixed
    windows. Counted in process memory: a shared cache round trip would cost more than the prediction."""

    def allow_request(self, request, view):
        allowed, self._wait = prediction_allowed(prediction_ident(getattr(request, "user", None), request))
        return allowed

    def wait(self):
        return max(self._wait, 0)
