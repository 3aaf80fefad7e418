"""Hourly aggregates and feature sketches of the prediction log, one model at a time.

For each hour, version and deployment mode: requests, rows, errors by kind, latency percentiles and a
latency histogram, confidence (sum and histogram), predicted classes, labelled and correct rows with the
confusion counts, and CBPE's expected correct rows; for each hour, version and column, a sketch on the
reference's fixed bins. An hour is computed from the raw rows and written whole, replacing what was
there, in one transaction: re-running an hour gives the same rows, and a job killed midway leaves every
hour either as it was or complete.

The rows are read once, as fixed-width records (a binary COPY on PostgreSQL, two connections reading
alternate hours), and counted with numpy: cheaper than one GROUP BY per figure over a day's partition.
Latency percentiles are numpy's linear percentile of the hour's requests (PostgreSQL's percentile_cont
gives the same); labelled rows and errors, few, come from their own indexed queries.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from django.db import transaction
from django.db.models import Count
from django.db.models.functions import TruncHour

from monitoring import logdata
from monitoring.models import DriftReference, FeatureSketch, HourlyAggregate, ReferenceColumn
from monitoring.services.references import calibrated_confidence
from monitoring.stattests import Kind
from registry.models import ModelVersion
from serving.models import PredictionLog

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from numpy.typing import ArrayLike

HOUR = dt.timedelta(hours=1)
_MICROS_PER_HOUR = 3_600_000_000
# Latency histogram: request counts on bins of 10 % width (bin k holds [1.1^k, 1.1^(k+1)) ms).
LATENCY_BIN_RATIO = 1.1
_LATENCY_SCALE = 1 / math.log(LATENCY_BIN_RATIO)
_KIND_CUT = re.compile(r"['\"\d:;(\[{]")


def error_kind(message: str | None) -> str:
    """What kind of error a logged message is: its wording without the field it names or the values it quotes."""
    if not message:
        return "error"
    head, separator, rest = message.partition(": ")
    if separator and re.fullmatch(r"[A-Z]\w*(Error|Exception)\w*", head):
        return head  # a shadow's exception, logged as "TypeName: message"
    if separator and " " not in head:
        message = rest  # "instances[0].age: expects a number ...": the field, then the message
    kind = _KIND_CUT.split(message, 1)[0].strip(" ,.-")
    return (kind or message)[:80]


def model_classes(model_name: str) -> dict[int, list[str]]:
    """{version: its class labels, in its signature's order} for every version of the model."""
    return {
        version: [str(label) for label in signature.get("classes", [])]
        for version, signature in ModelVersion.objects.filter(model__name=model_name).values_list(
            "version", "signature"
        )
    }


def _group_sums(inverse, groups, weights=None):
    return np.bincount(inverse, weights=weights, minlength=groups)


def aggregates_build(
    *,
    model_name: str,
    start: dt.datetime,
    end: dt.datetime,
    calibrations: Mapping[int, Mapping[str, Mapping[str, Sequence[float]]]] | None = None,
) -> dict[tuple[int, str, dt.datetime], HourlyAggregate]:
    """The hourly aggregates of [start, end) (whole hours), unsaved, keyed by (version, mode, hour)."""
    calibrations = calibrations or {}
    classes = model_classes(model_name)
    rows = logdata.traffic(model_name=model_name, start=start, end=end, classes=classes)
    if not len(rows):
        return {}
    hours = rows["micros"] // _MICROS_PER_HOUR
    modes = rows["mode"] + 1  # -1 (another mode) becomes 0
    key = (hours - hours.min()) * (1 << 24) + rows["version"].astype(np.int64) * 8 + modes
    keys, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    groups = len(keys)
    ok = ~rows["error"]
    requests = _group_sums(inverse, groups, rows["row"] == 0)
    counted = _group_sums(inverse, groups, ok)
    errors = _group_sums(inverse, groups, rows["error"])
    confidence = rows["confidence"]
    scored = ok & np.isfinite(confidence)
    confidence_sum = _group_sums(inverse[scored], groups, confidence[scored])
    confidence_bins = np.minimum((confidence[scored] * 10).astype(np.int64), 9)
    confidence_histogram = _group_sums(inverse[scored] * 10 + confidence_bins, groups * 10).reshape(groups, 10)
    predicted = ok & (rows["prediction"] >= 0)
    n_classes = max([len(labels) for labels in classes.values()] + [1])
    class_counts = _group_sums(
        inverse[predicted] * n_classes + rows["prediction"][predicted], groups * n_classes
    ).reshape(groups, n_classes)
    # CBPE: each row's confidence through its version's calibration map for its predicted class.
    expected = np.zeros(groups)
    calibrated_groups = np.zeros(groups, dtype=bool)
    for version, calibration in calibrations.items():
        mine = scored & predicted & (rows["version"] == version)
        if not mine.any():
            continue
        labels = np.asarray(classes.get(version, []), dtype=object)[rows["prediction"][mine]]
        calibrated = calibrated_confidence(calibration, predicted=labels, confidence=confidence[mine])
        expected += _group_sums(inverse[mine], groups, calibrated)
        calibrated_groups[np.unique(inverse[mine])] = True
    # Latency of requests (one per request: row 0): exact percentiles and a log-spaced histogram.
    is_request = rows["row"] == 0
    request_groups = inverse[is_request]
    latencies = rows["latency"][is_request]
    order = np.lexsort((latencies, request_groups))
    sorted_groups, sorted_latencies = request_groups[order], latencies[order]
    bounds = np.searchsorted(sorted_groups, np.arange(groups + 1))
    latency_bins = np.floor(np.log(np.maximum(latencies, 0.001)) * _LATENCY_SCALE).astype(np.int64)
    bin_keys, bin_counts = np.unique(request_groups * 100_000 + (latency_bins + 50_000), return_counts=True)
    histograms = defaultdict(dict)
    for bin_key, count in zip(bin_keys.tolist(), bin_counts.tolist(), strict=True):
        histograms[bin_key // 100_000][str(bin_key % 100_000 - 50_000)] = count
    aggregates = {}
    for group in range(groups):
        sample = rows[first[group]]
        hour = logdata.hour_of_micros(int(sample["micros"]))
        mode = logdata.MODES[sample["mode"]] if sample["mode"] >= 0 else "unknown"
        aggregate = HourlyAggregate(
            model_name=model_name,
            version=int(sample["version"]),
            deployment_mode=mode,
            hour=hour,
            requests=int(requests[group]),
            rows=int(counted[group]),
            errors=int(errors[group]),
            error_kinds={},
            latency_histogram=histograms.get(group, {}),
            confidence_sum=float(confidence_sum[group]),
            confidence_histogram=[int(c) for c in confidence_histogram[group]],
            class_counts={
                label: int(n)
                for label, n in zip(classes.get(int(sample["version"]), []), class_counts[group], strict=False)
                if n
            },
            confusion={},
            expected_correct=float(expected[group]) if calibrated_groups[group] else None,
        )
        in_group = sorted_latencies[bounds[group] : bounds[group + 1]]
        if len(in_group):
            aggregate.latency_p50_ms, aggregate.latency_p95_ms, aggregate.latency_p99_ms = (
                float(value) for value in np.percentile(in_group, [50, 95, 99])
            )
        aggregates[(aggregate.version, aggregate.deployment_mode, aggregate.hour)] = aggregate
    _add_labels(aggregates, model_name=model_name, start=start, end=end)
    _add_error_kinds(aggregates, model_name=model_name, start=start, end=end)
    return aggregates


def _hourly(queryset):
    return queryset.annotate(hour=TruncHour("created_at", tzinfo=dt.UTC))


def _add_labels(aggregates, *, model_name, start, end):
    """Labelled rows (feedback_at is set with the label, and indexed): confusion counts and correct rows."""
    labelled = _hourly(
        PredictionLog.objects.filter(
            model_name=model_name, created_at__gte=start, created_at__lt=end, feedback_at__isnull=False, error=""
        ).exclude(actual=None)
    )
    for row in labelled.values("version", "deployment_mode", "hour", "actual", "prediction").annotate(n=Count("id")):
        aggregate = aggregates.get((row["version"], row["deployment_mode"], row["hour"]))
        if aggregate is None:
            continue
        actual, predicted = str(row["actual"]), str(row["prediction"])
        aggregate.confusion.setdefault(actual, {})
        aggregate.confusion[actual][predicted] = aggregate.confusion[actual].get(predicted, 0) + row["n"]
        aggregate.labelled += row["n"]
        if actual == predicted:
            aggregate.correct += row["n"]


def _add_error_kinds(aggregates, *, model_name, start, end):
    errors = _hourly(
        PredictionLog.objects.filter(model_name=model_name, created_at__gte=start, created_at__lt=end).exclude(error="")
    )
    for row in errors.values("version", "deployment_mode", "hour", "error").annotate(n=Count("id")):
        aggregate = aggregates.get((row["version"], row["deployment_mode"], row["hour"]))
        if aggregate is None:
            continue
        kind = error_kind(row["error"])
        aggregate.error_kinds[kind] = aggregate.error_kinds.get(kind, 0) + row["n"]


# --- Sketches ----------------------------------------------------------------------------------------


def sketch_numeric(values: ArrayLike, edges: Sequence[float]) -> dict[str, Any]:
    """The sketch fields of a column's raw values on fixed inner `edges` (unsaved FeatureSketch kwargs)."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    infinite = int(np.isinf(values).sum())
    counts = np.bincount(np.searchsorted(np.asarray(edges), finite, "right"), minlength=len(edges) + 1)
    return {
        "kind": Kind.NUMERIC,
        "n": int(finite.size),
        "nulls": int(values.size - finite.size - infinite),
        "infinite": infinite,
        "minimum": float(finite.min()) if finite.size else None,
        "maximum": float(finite.max()) if finite.size else None,
        "total": float(finite.sum()),
        "total_squares": float(np.dot(finite, finite)),
        "bin_counts": counts.tolist(),
    }


def sketch_categorical(values: Iterable[object]) -> dict[str, Any]:
    """The sketch fields of a categorical column's raw values (None for missing)."""
    counts = {}
    nulls = 0
    for value in values:
        if value is None:
            nulls += 1
        else:
            counts[str(value)] = counts.get(str(value), 0) + 1
    return {"kind": Kind.CATEGORICAL, "n": sum(counts.values()), "nulls": nulls, "counts": counts}


def sketches_build(
    *,
    model_name: str,
    version: int,
    reference: DriftReference,
    columns: Sequence[ReferenceColumn],
    start: dt.datetime,
    end: dt.datetime,
    classes: Sequence[str],
) -> dict[dt.datetime, list[FeatureSketch]]:
    """The sketches of one version's columns for each hour of [start, end) it has rows in (unsaved), as
    {hour: [FeatureSketch]}: the window is read once and split by hour. `classes`: the version's labels."""
    scope = {"model_name": model_name, "version": version, "start": start, "end": end}
    layout = list(reference.vector_layout)
    window = logdata.window_columns(**scope, width=len(layout))
    if not window.rows:
        return {}
    hour_of_row = window.micros() // _MICROS_PER_HOUR
    hours, inverse = np.unique(hour_of_row, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(hours) + 1))
    positions = window.positions()
    values = {}
    for column in columns:
        if column.role == ReferenceColumn.Role.FEATURE and column.kind == Kind.NUMERIC:
            values[column.name] = window.column(layout.index(column.name))[order]
        elif column.role == ReferenceColumn.Role.CONFIDENCE:
            values[column.name] = window.confidence()[order]
    names = [c.name for c in columns if c.role == ReferenceColumn.Role.FEATURE and c.kind == Kind.CATEGORICAL]
    categorical = logdata.categorical_columns(**scope, names=names, with_hours=True) if names else {}
    unindexed = (positions == -1).any()
    sketches = {}
    for index, hour_index in enumerate(hours.tolist()):
        hour = logdata.hour_of_micros(hour_index * _MICROS_PER_HOUR)
        rows = slice(bounds[index], bounds[index + 1])
        in_hour = []
        for column in columns:
            if column.role == ReferenceColumn.Role.PREDICTION:
                hour_positions = positions[order][rows]
                counts = np.bincount(hour_positions[hour_positions >= 0], minlength=len(classes))
                counted = {label: int(n) for label, n in zip(classes, counts, strict=False) if n}
                if unindexed:
                    extra = logdata.predicted_class_counts(
                        model_name=model_name,
                        version=version,
                        start=hour,
                        end=hour + HOUR,
                        classes=classes,
                        unindexed_only=True,
                    )
                    for label, n in extra.items():
                        counted[label] = counted.get(label, 0) + n
                fields = {"kind": Kind.CATEGORICAL, "n": sum(counted.values()), "nulls": 0, "counts": counted}
            elif column.kind == Kind.NUMERIC:
                fields = sketch_numeric(values[column.name][rows], column.sketch_edges)
            else:
                fields = sketch_categorical(categorical[column.name].get(hour, []))
            in_hour.append(
                FeatureSketch(
                    model_name=model_name, version=version, hour=hour, name=column.name, role=column.role, **fields
                )
            )
        sketches[hour] = in_hour
    return sketches


# --- Writing hours -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HoursResult:
    """What one pass over a range of hours wrote."""

    hours: int
    aggregates: int
    sketches: int


def _references(model_name):
    return {
        reference.version.version: reference
        for reference in DriftReference.objects.filter(version__model__name=model_name).select_related("version")
    }


def hours_compute(
    *,
    model_name: str,
    start: dt.datetime,
    end: dt.datetime,
    sketches: bool = True,
    on_hour: Callable[[dt.datetime], object] | None = None,
) -> HoursResult:
    """Recompute the aggregates (and sketches) of every hour in [start, end) of a model; idempotent.

    Each hour is replaced whole in its own transaction. `on_hour(hour)` is called after each one
    (progress). Returns counts of what was written.
    """
    references = _references(model_name)
    classes = model_classes(model_name)
    calibrations = {number: reference.calibration for number, reference in references.items() if reference.calibration}
    start = start.astimezone(dt.UTC)
    columns = {}
    total_aggregates = total_sketches = hours = 0
    day_start = start
    while day_start < end:
        day_end = min(day_start + dt.timedelta(days=1), end)
        aggregates = aggregates_build(model_name=model_name, start=day_start, end=day_end, calibrations=calibrations)
        by_hour = defaultdict(list)
        for (_, _, hour), aggregate in aggregates.items():
            by_hour[hour].append(aggregate)
        sketches_by_hour = defaultdict(list)
        if sketches:
            for number in sorted({a.version for a in aggregates.values() if a.version and a.rows}):
                if number not in references:
                    continue
                if number not in columns:
                    columns[number] = list(references[number].columns.defer("sorted_values"))
                built = sketches_build(
                    model_name=model_name,
                    version=number,
                    reference=references[number],
                    columns=columns[number],
                    start=day_start,
                    end=day_end,
                    classes=classes.get(number, []),
                )
                for hour, in_hour in built.items():
                    sketches_by_hour[hour] += in_hour
        hour = day_start
        while hour < day_end:
            rows = by_hour.get(hour, [])
            hour_sketches = sketches_by_hour.get(hour, [])
            with transaction.atomic():
                HourlyAggregate.objects.filter(model_name=model_name, hour=hour).delete()
                HourlyAggregate.objects.bulk_create(rows)
                if sketches:
                    FeatureSketch.objects.filter(model_name=model_name, hour=hour).delete()
                    FeatureSketch.objects.bulk_create(hour_sketches)
            total_aggregates += len(rows)
            total_sketches += len(hour_sketches)
            hours += 1
            if on_hour is not None:
                on_hour(hour)
            hour += HOUR
        day_start = day_end
    return HoursResult(hours=hours, aggregates=total_aggregates, sketches=total_sketches)


def hours_with_late_feedback(*, model_name: str, since: dt.datetime, before: dt.datetime) -> list[dt.datetime]:
    """The hours (before `before`) whose rows got feedback after `since`: their accuracy moved."""
    return sorted(
        {
            hour.astimezone(dt.UTC)
            for hour in PredictionLog.objects.filter(
                model_name=model_name, feedback_at__gt=since, created_at__lt=before
            )
            .annotate(hour=TruncHour("created_at", tzinfo=dt.UTC))
            .values_list("hour", flat=True)
            .distinct()
        }
    )
