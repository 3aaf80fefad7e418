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


class PredictionRateThrottle(BaseThrottle):
    """At most SERVING_THROTTLE_RATE requests per token (or client address) per worker process, in fixed
    windows. Counted in process memory: a shared cache round trip would cost more than the prediction."""

    _counts = {}
    _lock = threading.Lock()

    def allow_request(self, request, view):
        limit, seconds = _parse_rate(settings.SERVING_THROTTLE_RATE)
        user = getattr(request, "user", None)
        ident = f"u{user.pk}" if user is not None and user.is_authenticated else self.get_ident(request)
        window = int(time.time() // seconds)
        with self._lock:
            if len(self._counts) > 50_000:
                self._counts.clear()
            key = (ident, seconds, window)
            count = self._counts.get(key, 0) + 1
            self._counts[key] = count
            self._counts.pop((ident, seconds, window - 1), None)
        self._wait = (window + 1) * seconds - time.time()
        return count <= limit

    def wait(self):
        return max(self._wait, 0)
