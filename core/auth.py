"""API authentication: cheap enough for every prediction request, revoked at once, and not a way to burn
the CPU by guessing.

- Valid tokens are remembered in process memory (DRF's TokenAuthentication looks the token up in the
  database on every request, which costs more than a prediction); the memory is dropped whenever the
  auth change signal moves (AUTH_SIGNAL_FILE: a token deleted, a user deactivated, deleted or given a new
  password, see governance.signals), so a revocation takes effect on the next request, in every process.
- Failed authentications are counted per client address in the cache; past AUTH_FAILURE_LIMIT in
  AUTH_FAILURE_WINDOW seconds the client gets 429 with Retry-After, before any password is hashed.
"""

import logging
import os
import tempfile
import time
from pathlib import Path

from django.conf import settings
from django.core.cache import cache
from rest_framework.authentication import BasicAuthentication, TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed, Throttled

logger = logging.getLogger(__name__)
_TOKEN_TTL = 60.0


def auth_signal_bump():
    """Tell every process to forget the tokens it remembers (atomic replace, so no reader sees a torn file)."""
    path = Path(settings.AUTH_SIGNAL_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".auth-signal-")
    with os.fdopen(handle, "w") as file:
        file.write(str(time.time_ns()))
    os.replace(temporary, path)


def _auth_signal_read():
    try:
        stat = os.stat(settings.AUTH_SIGNAL_FILE)
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_ino


def _client(request):
    return request.META.get("REMOTE_ADDR") or "unknown"


def _failure_key(client, window):
    return f"auth-failures:{client}:{window}"


def auth_failures_check(request):
    """Throttled (429, Retry-After) if this client failed to authenticate AUTH_FAILURE_LIMIT times in the
    current window."""
    seconds = settings.AUTH_FAILURE_WINDOW
    now = time.time()
    window = int(now // seconds)
    try:
        failures = cache.get(_failure_key(_client(request), window), 0)
    except Exception as exc:  # a shared cache (Redis) down must not take authentication down with it
        logger.warning("auth failure counter unavailable, not limiting: %s", exc)
        return
    if failures >= settings.AUTH_FAILURE_LIMIT:
        wait = max(1, int((window + 1) * seconds - now + 0.999))
        raise Throttled(wait=wait, detail=f"too many failed authentications from this client; retry in {wait} s")


def auth_failure_count(request):
    """Count one failed authentication of this client in the current window."""
    seconds = settings.AUTH_FAILURE_WINDOW
    key = _failure_key(_client(request), int(time.time() // seconds))
    try:
        if not cache.add(key, 1, timeout=seconds + 1):
            try:
                cache.incr(key)
            except ValueError:  # expired between add and incr
                cache.add(key, 1, timeout=seconds + 1)
    except Exception as exc:  # the cache down: the failure is answered 401 all the same
        logger.warning("auth failure counter unavailable: %s", exc)


class FailureLimitedMixin:
    """Refuse a client past its failure limit before checking anything; count each failure."""

    def authenticate(self, request):
        if self.keyword_present(request):
            auth_failures_check(request)
        try:
            return super().authenticate(request)
        except AuthenticationFailed:
            auth_failure_count(request)
            raise

    def keyword_present(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        return header[:16].lower().startswith(self.authenticate_header(request).split()[0].lower())


class CachedTokenAuthentication(FailureLimitedMixin, TokenAuthentication):
    """TokenAuthentication remembering valid tokens for a minute, forgotten at once on the auth change
    signal, with failures limited per client."""

    _known = {}
    _generation = object()

    @classmethod
    def remembered(cls, key):
        """(user, token) of a token this process checked less than a minute ago and has not been told to
        forget; None otherwise (then authenticate_credentials asks the database)."""
        generation = _auth_signal_read()
        if generation != CachedTokenAuthentication._generation:
            CachedTokenAuthentication._known = {}
            CachedTokenAuthentication._generation = generation
        found = CachedTokenAuthentication._known.get(key)
        if found is not None and found[1] > time.monotonic():
            return found[0]
        return None

    def authenticate_credentials(self, key):
        result = self.remembered(key)
        if result is not None:
            return result
        known, now = CachedTokenAuthentication._known, time.monotonic()
        result = super().authenticate_credentials(key)
        if len(known) > 10_000:
            known.clear()
        known[key] = (result, now + _TOKEN_TTL)
        return result


class LimitedBasicAuthentication(FailureLimitedMixin, BasicAuthentication):
    """HTTP basic auth (API_BASIC_AUTH on) with failures limited per client: a wrong password costs the
    hasher's deliberate half second only AUTH_FAILURE_LIMIT times per window."""
