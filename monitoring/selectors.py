"""Monitoring's reads: traffic and accuracy over time from the hourly aggregates, stored drift runs, alerts
(`alerts_firing`, `alert_list`) and retrainings."""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db.models import Max, Prefetch, Sum

from core.errors import InvalidInput, NotFound
from monitoring.models import Alert, DriftReference, DriftResult, DriftRun, HourlyAggregate, Retraining
from monitoring.services.aggregates import LATENCY_BIN_RATIO
from registry.models import ModelVersion, RegisteredModel

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from django.db.models import QuerySet

GRANULARITIES = ("hour", "day")


def model_require(*, model_name: str) -> RegisteredModel:
    """The registered model, or NotFound."""
    model = RegisteredModel.objects.filter(name=model_name).first()
    if model is None:
        raise NotFound(f"no registered model {model_name!r}", field="name")
    return model


def macro_f1(confusion: Mapping[str, Mapping[str, int]]) -> float | None:
    """Macro F1 over the labels seen as truth or prediction ({actual: {predicted: n}}), as scikit-learn's."""
    labels = set(confusion) | {p for row in confusion.values() for p in row}
    if not labels:
        return None
    scores = []
    for label in labels:
        true_positive = confusion.get(label, {}).get(label, 0)
        false_positive = sum(row.get(label, 0) for actual, row in confusion.items() if actual != label)
        false_negative = sum(n for predicted, n in confusion.get(label, {}).items() if predicted != label)
        denominator = 2 * true_positive + false_positive + false_negative
        scores.append(2 * true_positive / denominator if denominator else 0.0)
    return sum(scores) / len(scores)


def _latency_percentiles(histogram, percentiles=(50, 95, 99)):
    """Percentiles from a merged latency histogram: the geometric middle of the bin that holds them."""
    if not histogram:
        return [None] * len(percentiles)
    bins = sorted((int(key), n) for key, n in histogram.items())
    total = sum(n for _, n in bins)
    results = []
    for percentile in percentiles:
        rank = percentile / 100 * total
        seen = 0
        for key, n in bins:
            seen += n
            if seen >= rank:
                results.append(LATENCY_BIN_RATIO ** (key + 0.5))
                break
    return results


def latency_percentiles(
    histogram: Mapping[Any, int], percentiles: Sequence[float] = (50, 95, 99)
) -> list[float | None]:
    """Percentiles (ms) of a merged latency histogram ({bin: requests}), None where it is empty."""
    return _latency_percentiles(histogram, percentiles)


class _Bucket:
    def __init__(self, moment, version, mode):
        self.moment, self.version, self.mode = moment, version, mode
        self.hours = []

    def payload(self, granularity):
        hours = self.hours
        requests = sum(h.requests for h in hours)
        rows = sum(h.rows for h in hours)
        errors = sum(h.errors for h in hours)
        labelled = sum(h.labelled for h in hours)
        correct = sum(h.correct for h in hours)
        error_kinds, classes, confusion, latency_histogram = defaultdict(int), defaultdict(int), {}, defaultdict(int)
        histogram = [0] * 10
        for hour in hours:
            for kind, n in hour.error_kinds.items():
                error_kinds[kind] += n
            for label, n in hour.class_counts.items():
                classes[label] += n
            for actual, predicted in hour.confusion.items():
                row = confusion.setdefault(actual, {})
                for label, n in predicted.items():
                    row[label] = row.get(label, 0) + n
            for key, n in hour.latency_histogram.items():
                latency_histogram[key] += n
            for index, n in enumerate(hour.confidence_histogram or []):
                histogram[index] += n
        scored = sum(histogram)
        if granularity == "hour" and len(hours) == 1:
            latency = {
                "p50": hours[0].latency_p50_ms,
                "p95": hours[0].latency_p95_ms,
                "p99": hours[0].latency_p99_ms,
                "from": "raw rows",
            }
        else:
            p50, p95, p99 = _latency_percentiles(latency_histogram)
            latency = {"p50": p50, "p95": p95, "p99": p99, "from": f"histogram (bins of {LATENCY_BIN_RATIO - 1:.0%})"}
        calibrated = [h for h in hours if h.expected_correct is not None]
        calibrated_rows = sum(sum(h.class_counts.values()) for h in calibrated)
        return {
            "time": self.moment.isoformat(),
            "version": self.version or None,
            "mode": self.mode or "refused",
            "requests": requests,
            "rows": rows,
            "errors": errors,
            "error_rate": errors / requests if requests else None,
            "error_kinds": dict(error_kinds),
            "latency_ms": latency,
            "confidence": {
                "mean": sum(h.confidence_sum for h in hours) / scored if scored else None,
                "histogram": histogram,
            },
            "classes": dict(classes),
            "labelled": labelled,
            "correct": correct,
            "accuracy": correct / labelled if labelled else None,
            "macro_f1": macro_f1(confusion) if labelled else None,
            "estimated_accuracy": (
                sum(h.expected_correct for h in calibrated) / calibrated_rows if calibrated_rows else None
            ),
        }


def monitoring_series(
    *, model_name: str, start: dt.datetime, end: dt.datetime, granularity: str = "hour"
) -> list[dict[str, Any]]:
    """Traffic, errors, latency, confidence, classes and accuracy per hour or day, per version and mode."""
    model_require(model_name=model_name)
    if granularity not in GRANULARITIES:
        raise InvalidInput(f"must be one of {', '.join(GRANULARITIES)}", field="granularity")
    hours = HourlyAggregate.objects.filter(model_name=model_name, hour__gte=start, hour__lt=end).order_by(
        "hour", "version", "deployment_mode"
    )
    buckets = {}
    for hour in hours:
        moment = hour.hour.astimezone(dt.UTC)
        if granularity == "day":
            moment = moment.replace(hour=0)
        key = (moment, hour.version, hour.deployment_mode)
        buckets.setdefault(key, _Bucket(*key)).hours.append(hour)
    return [bucket.payload(granularity) for bucket in buckets.values()]


def accuracy_summary(*, model_name: str, start: dt.datetime, end: dt.datetime) -> list[dict[str, Any]]:
    """Per version over the range: live accuracy and macro F1 from feedback, CBPE's estimate, validation's."""
    versions = defaultdict(list)
    for hour in HourlyAggregate.objects.filter(model_name=model_name, hour__gte=start, hour__lt=end, version__gt=0):
        versions[hour.version].append(hour)
    references = {
        r.version.version: r
        for r in DriftReference.objects.filter(version__model__name=model_name).select_related("version")
    }
    metrics = dict(ModelVersion.objects.filter(model__name=model_name).values_list("version", "metrics"))
    summary = []
    for version in sorted(versions):
        bucket = _Bucket(start, version, "all")
        bucket.hours = versions[version]
        payload = bucket.payload("day")
        reference = references.get(version)
        validation = reference.validation_accuracy if reference else None
        summary.append(
            {
                "version": version,
                "rows": payload["rows"],
                "labelled": payload["labelled"],
                "accuracy": payload["accuracy"],
                "macro_f1": payload["macro_f1"],
                "estimated_accuracy": payload["estimated_accuracy"],
                "validation_accuracy": validation
                if validation is not None
                else (metrics.get(version) or {}).get("accuracy"),
                "gap": (
                    payload["estimated_accuracy"] - payload["accuracy"]
                    if payload["accuracy"] is not None and payload["estimated_accuracy"] is not None
                    else None
                ),
            }
        )
    return summary


def drift_run_latest(
    *, model_name: str, window: str, version: int | None = None, kind: str | None = None
) -> DriftRun | None:
    """The latest stored drift run of a model for a window label (and version, computation), or None."""
    model_require(model_name=model_name)
    runs = DriftRun.objects.filter(model_name=model_name, window=window)
    if version is not None:
        runs = runs.filter(version=version)
    if kind:
        runs = runs.filter(kind=kind)
    return runs.order_by("-computed_at", "-id").first()


def _number(value):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return value


def drift_run_payload(run: DriftRun) -> dict[str, Any]:
    """A drift run as the API and `monitor drift --json` show it."""
    results = list(run.results.all()) if run.pk else []
    features = [
        {
            "feature": r.name,
            "method": r.method,
            "score": _number(r.score),
            "threshold": r.threshold,
            "drifted": r.drifted,
            "reference_rows": r.reference_rows,
            "current_rows": r.current_rows,
            **({"note": r.note} if r.note else {}),
        }
        for r in results
        if r.role == "feature" and r.verdict
    ]
    effect_sizes = defaultdict(dict)
    for r in results:
        if r.role == "feature" and not r.verdict:
            effect_sizes[r.name][r.method] = _number(r.score)
        if r.detail.get("ks_distance_upper") is not None:
            effect_sizes[r.name]["ks_distance_bounds"] = [r.detail["ks_distance_lower"], r.detail["ks_distance_upper"]]
    for feature in features:
        if effect_sizes.get(feature["feature"]):
            feature["effect_sizes"] = effect_sizes[feature["feature"]]
    prediction = [
        {
            "column": r.name,
            "method": r.method,
            "score": _number(r.score),
            "threshold": r.threshold,
            "drifted": r.drifted,
            "reference_rows": r.reference_rows,
            "current_rows": r.current_rows,
            **({"note": r.note} if r.note else {}),
        }
        for r in results
        if r.role != "feature"
    ]
    return {
        "id": run.pk,
        "model": run.model_name,
        "version": run.version,
        "window": run.window,
        "from": run.window_start.isoformat(),
        "to": run.window_end.isoformat(),
        "kind": run.kind,
        "status": run.status,
        "message": run.message,
        "rows": run.rows,
        "dataset_drift": run.dataset_drift,
        "share_drifted": run.share_drifted,
        "features": features,
        "prediction": prediction,
        "computed_at": run.computed_at.isoformat() if run.computed_at else None,
        "seconds": round(run.seconds, 3),
    }


# --- alerts and retraining ---------------------------------------------------------------------------


def alerts_firing(*, model_name: str | None = None) -> QuerySet[Alert]:
    """The alerts firing now (newest first), of one model or all: a queryset with rule and model loaded.

    Each has `rule.kind`, `summary` (what it found, one line), `value` against `threshold`, `fired_at`,
    `acknowledged_at` and `silenced_until`; see monitoring.models.Alert.
    """
    alerts = Alert.objects.filter(state=Alert.State.FIRING).select_related("rule", "model", "acknowledged_by")
    if model_name:
        alerts = alerts.filter(model__name=model_name)
    return alerts.order_by("-fired_at", "-id")


def alert_list(*, state: str | None = None, model_name: str | None = None) -> QuerySet[Alert]:
    """Alerts in a state (pending, firing, resolved; None: all), of one model or all, newest first."""
    if state and state not in Alert.State.values:
        raise InvalidInput(f"must be one of {', '.join(Alert.State.values)}", field="state")
    alerts = Alert.objects.select_related("rule", "model", "acknowledged_by")
    if state:
        alerts = alerts.filter(state=state)
    if model_name:
        model_require(model_name=model_name)
        alerts = alerts.filter(model__name=model_name)
    return alerts.order_by("-opened_at", "-id")


def retrainings_of(*, model_name: str) -> QuerySet[Retraining]:
    """A model's retrainings, newest first, with what they made."""
    return (
        Retraining.objects.filter(model__name=model_name)
        .select_related("model", "base_version", "new_version", "promotion_request", "run", "dataset")
        .order_by("-started_at", "-id")
    )


@dataclass(frozen=True)
class VersionQuality:
    """A version's accuracy over the monitoring window, as the /metrics gauges show it."""

    model_name: str
    version: int
    rows: int
    labelled: int
    accuracy: float | None
    estimated_accuracy: float | None
    validation_accuracy: float | None


@dataclass(frozen=True)
class DriftGauge:
    """The latest successful drift run of a model for a window label, with its deciding per-column results."""

    run: DriftRun
    results: list


def quality_by_version(*, start: dt.datetime, end: dt.datetime) -> list[VersionQuality]:
    """Every model version with traffic in [start, end): rows, labelled rows, live, estimated, validation accuracy.

    Three queries whatever the number of models (a scrape of /metrics runs it)."""
    totals = (
        HourlyAggregate.objects.filter(hour__gte=start, hour__lt=end, version__gt=0)
        .values("model_name", "version")
        .annotate(rows=Sum("rows"), labelled=Sum("labelled"), correct=Sum("correct"))
    )
    # CBPE's estimate is over the calibrated hours' rows only (as accuracy_summary computes it).
    calibrated = defaultdict(lambda: [0.0, 0])
    for hour in HourlyAggregate.objects.filter(
        hour__gte=start, hour__lt=end, version__gt=0, expected_correct__isnull=False
    ).only("model_name", "version", "expected_correct", "class_counts"):
        entry = calibrated[(hour.model_name, hour.version)]
        entry[0] += hour.expected_correct
        entry[1] += sum(hour.class_counts.values())
    validation = {}
    for model_name, version, reference_accuracy, metrics in ModelVersion.objects.filter(
        model__name__in={t["model_name"] for t in totals}
    ).values_list("model__name", "version", "drift_reference__validation_accuracy", "metrics"):
        validation[(model_name, version)] = (
            reference_accuracy if reference_accuracy is not None else (metrics or {}).get("accuracy")
        )
    qualities = []
    for t in totals:
        key = (t["model_name"], t["version"])
        expected, calibrated_rows = calibrated.get(key, (0.0, 0))
        qualities.append(
            VersionQuality(
                model_name=t["model_name"],
                version=t["version"],
                rows=t["rows"] or 0,
                labelled=t["labelled"] or 0,
                accuracy=t["correct"] / t["labelled"] if t["labelled"] else None,
                estimated_accuracy=expected / calibrated_rows if calibrated_rows else None,
                validation_accuracy=validation.get(key),
            )
        )
    return qualities


def drift_latest_runs() -> list[DriftGauge]:
    """The latest successful drift run of every model and window label, with its per-column verdicts."""
    latest = (
        DriftRun.objects.filter(status=DriftRun.Status.OK)
        .values("model_name", "window")
        .annotate(last=Max("id"))
        .values_list("last", flat=True)
    )
    runs = DriftRun.objects.filter(id__in=list(latest)).prefetch_related(
        Prefetch("results", queryset=DriftResult.objects.filter(verdict=True))
    )
    return [DriftGauge(run=run, results=list(run.results.all())) for run in runs]
