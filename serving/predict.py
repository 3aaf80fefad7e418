"""One prediction request: pick the version, check the input, predict, log and count it.

`predict()` is the one entry point: the APIs (ours, MLflow's, the Open Inference Protocol) and any
other caller (the CRM connector) go through it, so every prediction is routed, checked, logged and
counted the same way.
"""

import random
import time
import uuid
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import models
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
from serving.runtime import LoadedModel, runtime


class RequestKind(models.TextChoices):
    """How the rows of a request are laid out."""

    RECORDS = "records", "objects of feature: value, one per row"
    ROWS = "rows", "lists of values in signature order, one per row"
    DICT = "dict", "feature: list of values (MLflow's tensor dict, one OIP tensor per feature)"
    SPLIT = "split", "MLflow's dataframe_split: columns and rows of data"
    COLUMNS = "columns", "feature: list (or numpy array) of values, as a caller already has them"


class ServedBy(models.TextChoices):
    """Which deployment answered; stored as PredictionLog.deployment_mode."""

    PRIMARY = "primary"
    CANARY = "canary"
    SHADOW = "shadow"  # logged beside the primary by the log writer, never returned
    DIRECT = "direct"  # a version asked for by number, whatever its stage


@dataclass(frozen=True)
class Prediction:
    """What one request was answered: the version that answered, a label and the class probabilities
    (numpy [rows, classes], in `model.classes` order) per row."""

    model: LoadedModel
    labels: list
    probabilities: object
    served_by: ServedBy
    request_id: str
    latency_ms: float
    rows: int


_READERS = {
    RequestKind.RECORDS: inputs.columns_from_records,
    RequestKind.ROWS: inputs.columns_from_rows,
    RequestKind.DICT: inputs.columns_from_dict,
    RequestKind.SPLIT: inputs.columns_from_split,
    RequestKind.COLUMNS: inputs.columns_from_dict,
}


def _observe_many(histogram, values):
    """Histogram.observe for each value, as one increment per bucket: a 1,000-row request would
    otherwise write the shared metrics file 2,000 times."""
    if len(values) < 8 or not hasattr(histogram, "_buckets"):
        for value in values.tolist():
            histogram.observe(value)
        return
    bounds = np.asarray(histogram._upper_bounds)
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    for bucket, count in zip(histogram._buckets, counts.tolist(), strict=False):
        if count:
            bucket.inc(count)
    histogram._sum.inc(float(values.sum()))


def _batch(payload, features, kind):
    if kind == RequestKind.COLUMNS and isinstance(payload, tuple):
        payload = payload[0]  # (columns, n), as older callers passed them
    return _READERS[kind](payload, features, max_rows=settings.SERVING_MAX_ROWS)


def predict(
    *,
    model_name: str,
    payload,
    kind: RequestKind | str,
    version: int | None = None,
    environment: str = "production",
    request_id: str | None = None,
    by=None,
) -> Prediction:
    """Predict for `payload` (laid out as `kind`) with the version deployed in `environment`, or `version`
    (which `by` may call only if it is in Staging or Production, or with predict_any_version)."""
    started = time.perf_counter()
    request_id = request_id or uuid.uuid4().hex
    kind = RequestKind(kind)
    model, served_by, shadow = None, ServedBy.DIRECT, None
    try:
        if version is not None:
            model = runtime.version(model_name, version, by=by)
        else:
            route = runtime.route(model_name, environment)
            model, served_by = route.primary, ServedBy.PRIMARY
            if route.canary is not None and random.random() * 100 < route.canary_percent:
                model, served_by = route.canary, ServedBy.CANARY
            shadow = route.shadow
        batch = _batch(payload, model.features, kind)
        labels, probabilities = model.predict(batch.arrays)
    except ApplicationError as exc:
        version_label = str(model.version) if model else ""
        prediction_requests_total.labels(model_name, version_label, str(exc.status_code)).inc()
        prediction_errors_total.labels(model_name, version_label, type(exc).__name__).inc()
        raise
    latency = time.perf_counter() - started
    _count_success(model_name, str(model.version), latency, probabilities)
    if settings.PREDICTION_LOG_ENABLED:
        _log_handoff(request_id, model_name, model, served_by, latency, batch, labels, probabilities, shadow)
    return Prediction(
        model=model,
        labels=labels,
        probabilities=probabilities,
        served_by=served_by,
        request_id=request_id,
        latency_ms=latency * 1000,
        rows=batch.rows,
    )


_success_metrics = {}  # (model, version) -> its three metric children: .labels() costs more than .inc()


def _count_success(model_name, version_label, latency, probabilities):
    children = _success_metrics.get((model_name, version_label))
    if children is None:
        children = (
            prediction_requests_total.labels(model_name, version_label, "200"),
            prediction_latency_seconds.labels(model_name, version_label),
            prediction_confidence.labels(model_name, version_label),
        )
        _success_metrics[(model_name, version_label)] = children
    requests, latency_seconds, confidence = children
    requests.inc()
    latency_seconds.observe(latency)
    _observe_many(confidence, probabilities.max(axis=1))


def _log_handoff(request_id, model_name, model, served_by, latency, batch, labels, probabilities, shadow):
    writer.submit(
        LogRecord(
            request_id=request_id,
            model_name=model_name,
            version=model.version,
            mode=served_by.value,
            created_at=timezone.now(),
            latency_ms=latency * 1000,
            columns=batch.columns,
            labels=labels,
            probabilities=probabilities,
            classes=model.classes,
            shadow=shadow,
        )
    )


def error_logged(*, model_name: str, request_id: str, error: str, latency_ms: float) -> None:
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
