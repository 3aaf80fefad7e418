"""One prediction request: pick the version, check the input, predict, log and count it."""

import random
import time
import uuid

from django.conf import settings
from django.utils import timezone

from mlops_site.errors import ApplicationError
from monitoring.metrics import (
    prediction_confidence,
    prediction_errors_total,
    prediction_latency_seconds,
    prediction_requests_total,
)
from serving import inputs
from serving.models import PredictionLog
from serving.predlog import writer
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


def predict(*, model_name, payload, kind, version=None, environment="production", request_id=None):
    """Predict for `payload` (kind: records, rows, dict, split or columns) with the deployed version
    (or `version`); returns (model, labels, probabilities, mode, request_id, latency_ms, inputs)."""
    started = time.perf_counter()
    request_id = request_id or uuid.uuid4().hex
    model, mode, shadow = None, "direct", None
    try:
        if version is not None:
            model = runtime.version(model_name, version)
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
    confidences = probabilities.max(axis=1)
    histogram = prediction_confidence.labels(model_name, version_label)
    for value in confidences:
        histogram.observe(float(value))
    if settings.PREDICTION_LOG_ENABLED:
        now = timezone.now()
        names = [name for name, _ in model.features]
        rows = [
            PredictionLog(
                request_id=request_id,
                row=index,
                model_name=model_name,
                version=model.version,
                deployment_mode=mode,
                inputs={name: columns[name][index] for name in names},
                prediction=labels[index],
                probabilities=dict(zip(model.classes, map(float, probabilities[index]), strict=True)),
                confidence=float(confidences[index]),
                latency_ms=latency * 1000,
                created_at=now,
            )
            for index in range(n)
        ]
        writer.submit((rows, (shadow, columns, request_id, now) if shadow is not None else None))
    return model, labels, probabilities, mode, request_id, latency * 1000, n


def error_logged(*, model_name, request_id, error, latency_ms):
    """Log a refused request too, so monitoring sees bad input as well as good."""
    if settings.PREDICTION_LOG_ENABLED:
        writer.submit(
            (
                [
                    PredictionLog(
                        request_id=request_id,
                        model_name=model_name,
                        version=0,
                        latency_ms=latency_ms,
                        error=error[:2000],
                        created_at=timezone.now(),
                    )
                ],
                None,
            )
        )
