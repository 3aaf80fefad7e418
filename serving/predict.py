"""One prediction request: pick the version, check the input, predict, log and count it."""

import random
import time
import uuid

from django.conf import settings
from django.utils import timezone

from core.errors import ApplicationError
from serving import inputs
from serving.metrics import (
    prediction_confidence,
    prediction_errors_total,
    prediction_latency_seconds,
    prediction_requests_total,
)
from serving.predlog import LogRecord, writer
from serving.runtime import runtime


def _columns(payload, features, kind):
    max_rows = settings.SERVING_MAX_ROWS
    if kind == "records":
        return inputs.columns_from_records(payload, features, max_rows=max_rows)
    if kind == "rows":
        return inputs.columns_from_rows(payload, features, max_rows=max_rows)
    if kind == "dict":
        return inputs.columns_from_dict(payload, features, max_rows=max_rows)
    if kind == "split":
        return inputs.columns_from_split(payload, features, max_rows=max_rows)
    return payload  # already (columns, n)


def predict(*, model_name, payload, kind, version=None, environment="production", request_id=None, by=None):
    """Predict for `payload` (kind: records, rows, dict or split) with the deployed version (or `version`).

    Returns (model, labels, probabilities, mode, request_id, latency_ms, rows).
    """
    started = time.perf_counter()
    request_id = request_id or uuid.uuid4().hex
    model, mode, shadow = None, "direct", None
    try:
        if version is not None:
            model = runtime.version(model_name, version, by=by)
        else:
            route = runtime.route(model_name, environment)
            model, mode = route.primary, "primary"
            if route.canary is not None and random.random() * 100 < route.canary_percent:
                model, mode = route.canary, "canary"
            shadow = route.shadow
        columns, n = _columns(payload, model.features, kind)
        labels, probabilities = model.predict(columns)
    except ApplicationError as exc:
        version_label = str(model.version) if model else ""
        prediction_requests_total.labels(model_name, version_label, str(exc.status_code)).inc()
        prediction_errors_total.labels(model_name, version_label, type(exc).__name__).inc()
        raise
    latency = time.perf_counter() - started
    version_label = str(model.version)
    prediction_requests_total.labels(model_name, version_label, "200").inc()
    prediction_latency_seconds.labels(model_name, version_label).observe(latency)
    histogram = prediction_confidence.labels(model_name, version_label)
    for value in probabilities.max(axis=1).tolist():
        histogram.observe(value)
    if settings.PREDICTION_LOG_ENABLED:
        writer.submit(
            LogRecord(
                request_id=request_id,
                model_name=model_name,
                version=model.version,
                mode=mode,
                created_at=timezone.now(),
                latency_ms=latency * 1000,
                columns=columns,
                labels=labels,
                probabilities=probabilities,
                classes=model.classes,
                shadow=shadow,
            )
        )
    return model, labels, probabilities, mode, request_id, latency * 1000, n


def error_logged(*, model_name, request_id, error, latency_ms):
    """Log a refused request too, so monitoring sees bad input as well as good."""
    if settings.PREDICTION_LOG_ENABLED:
        writer.submit(
            LogRecord(
                request_id=request_id,
                model_name=model_name,
                version=0,
                mode="",
                created_at=timezone.now(),
                latency_ms=latency_ms,
                error=error,
            )
        )
