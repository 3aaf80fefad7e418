"""The WSGI application the web server runs: Django's, with a shorter middleware chain for predictions.

Prediction requests (the native, MLflow and Open Inference Protocol routes, /predict and /health) skip
the middleware only the admin and static files use: WhiteNoise (static files) and messages (the
admin's flash messages). Everything else runs as for any request: the Prometheus middleware,
security headers, sessions, CSRF cookie, authentication, the request id and client IP,
X-Frame-Options; so answers, errors and headers are those of the full chain (tests/serving/test_wsgi.py compares them).
In front of both, serving.fast answers our API's predictions that need nothing only Django has.
"""

import os
import re

from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mlops_site.settings")

PREDICTION_PATHS = re.compile(
    r"^/(?:api/v1/models/[^/]+/(?:versions/[0-9]+/)?(?:predict|invocations|ping)|v2(?:/.*)?|predict|health)$"
)
ADMIN_ONLY_MIDDLEWARE = (
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
)


class PredictionHandler(WSGIHandler):
    """Django's WSGI handler built with settings.MIDDLEWARE less ADMIN_ONLY_MIDDLEWARE."""

    def load_middleware(self, is_async=False):
        full = settings.MIDDLEWARE
        settings.MIDDLEWARE = [path for path in full if path not in ADMIN_ONLY_MIDDLEWARE]
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = full


def application_build():
    """The WSGI callable: prediction paths to the short chain, everything else to Django's full one."""
    import django

    django.setup(set_prefix=False)
    full, short = WSGIHandler(), PredictionHandler()
    match = PREDICTION_PATHS.match

    def application(environ, start_response):
        handler = short if match(environ.get("PATH_INFO", "")) else full
        return handler(environ, start_response)

    from serving.fast import FastPredictions

    return FastPredictions(application)
