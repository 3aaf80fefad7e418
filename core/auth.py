"""API authentication cheap enough for every prediction request."""

import time

from rest_framework.authentication import TokenAuthentication

_TOKEN_TTL = 60.0


class CachedTokenAuthentication(TokenAuthentication):
    """TokenAuthentication remembering valid tokens for a minute (a revoked token stops within a minute).

    DRF's own looks the token up in the database on every request, which costs more than a prediction.
    """

    _known = {}

    def authenticate_credentials(self, key):
        found = self._known.get(key)
        now = time.monotonic()
        if found is not None and found[1] > now:
            return found[0]
        result = super().authenticate_credentials(key)
        if len(self._known) > 10_000:
            self._known.clear()
        self._known[key] = (result, now + _TOKEN_TTL)
        return result
