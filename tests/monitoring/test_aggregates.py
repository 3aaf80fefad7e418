"""Hourly aggregates against a direct computation, idempotence, late rows, late feedback and catching up."""

import datetime as dt

import numpy as np
import pytest
from django.db.models import Count
from django.utils import timezone

from monitoring.models import FeatureSketch, HourlyAggregate, MonitoringJob
from monitoring.selectors import accuracy_summary, macro_f1, monitoring_series
from monitoring.services import error_kind, hours_compute, job_run
from monitoring.services.references import calibrated_confidence
from monitoring.windows import hour_floor
from serving.models import PredictionLog
from serving.services import feedback_record
from tests.monitoring.conftest import hours_ago

pytestmark = pytest.mark.django_db


def _traffic(log_writer, churn_frame, hours):
    """Two hours of traffic: requests of 1 to 5 rows with varied latency, a canary, errors."""
    rng = np.random.default_rng(4)
    for offset in hours:
        frame = churn_frame.sample(120, random_state=offset).reset_index(drop=True)
        log_writer.write(
            frame, at=hours_ago(offset, minute=5), per_request=4, latency_ms=list(rng.uniform(0.2, 40, 30))
        )
        log_writer.write(frame.head(20), at=hours_ago(offset, minute=30), mode="canary", latency_ms=3.0)
        log_writer.error("missing feature 'age'", at=hours_ago(offset, minute=40))
        log_writer.error("expects a number, got text 'x'", at=hours_ago(offset, minute=41))


def _span(hours_back):
    end = hour_floor(timezone.now()) + dt.timedelta(hours=1)
    return end - dt.timedelta(hours=hours_back + 1), end


def test_aggregates_equal_a_direct_computation(churn_reference, churn_frame, log_writer):
    _traffic(log_writer, churn_frame, hours=(3, 2))
    start, end = _span(4)

    result = hours_compute(model_name="churn", start=start, end=end)

    assert result.hours == 5
    hour = hour_floor(hours_ago(3))
    primary = HourlyAggregate.objects.get(model_name="churn", version=1, deployment_mode="primary", hour=hour)
    rows = PredictionLog.objects.filter(
        model_name="churn",
        version=1,
        deployment_mode="primary",
        created_at__gte=hour,
        created_at__lt=hour + dt.timedelta(hours=1),
    )
    assert primary.requests == rows.filter(row=0).count() == 30
    assert primary.rows == rows.count() == 120
    latencies = np.array(list(rows.filter(row=0).values_list("latency_ms", flat=True)))
    assert [primary.latency_p50_ms, primary.latency_p95_ms, primary.latency_p99_ms] == pytest.approx(
        np.percentile(latencies, [50, 95, 99]).tolist(), rel=1e-12
    )
    confidences = np.array(list(rows.values_list("confidence", flat=True)))
    assert primary.confidence_sum == pytest.approx(confidences.sum(), rel=1e-12)
    assert (
        primary.confidence_histogram
        == np.bincount(np.minimum((confidences * 10).astype(int), 9), minlength=10).tolist()
    )
    assert primary.class_counts == {
        label: n for label, n in rows.values_list("prediction").annotate(n=Count("id")).values_list("prediction", "n")
    }
    assert sum(primary.latency_histogram.values()) == 30
    # CBPE: the calibrated confidence of each row's predicted class, summed.
    predicted = list(rows.values_list("prediction", flat=True))
    expected = calibrated_confidence(churn_reference.calibration, predicted=predicted, confidence=confidences).sum()
    assert primary.expected_correct == pytest.approx(expected, rel=1e-9)
    canary = HourlyAggregate.objects.get(model_name="churn", deployment_mode="canary", hour=hour)
    assert (canary.requests, canary.rows, canary.latency_p50_ms) == (20, 20, 3.0)
    refused = HourlyAggregate.objects.get(model_name="churn", version=0, hour=hour)
    assert refused.errors == refused.requests == 2
    assert refused.error_kinds == {"missing feature": 1, "expects a number, got text": 1}
    assert refused.error_rate == 1.0
    # Sketches of every column of the version for the hours it served.
    assert FeatureSketch.objects.filter(model_name="churn", hour=hour).count() == churn_reference.columns.count()


def test_recomputing_an_hour_gives_the_same_rows(churn_reference, churn_frame, log_writer):
    _traffic(log_writer, churn_frame, hours=(2,))
    start, end = _span(3)
    hours_compute(model_name="churn", start=start, end=end)
    first = list(HourlyAggregate.objects.values().order_by("hour", "version", "deployment_mode"))
    sketches = list(FeatureSketch.objects.values("hour", "name", "n", "bin_counts", "counts").order_by("hour", "name"))

    hours_compute(model_name="churn", start=start, end=end)

    again = list(HourlyAggregate.objects.values().order_by("hour", "version", "deployment_mode"))
    strip = ("id", "computed_at")
    assert [{k: v for k, v in row.items() if k not in strip} for row in again] == [
        {k: v for k, v in row.items() if k not in strip} for row in first
    ]
    assert (
        list(FeatureSketch.objects.values("hour", "name", "n", "bin_counts", "counts").order_by("hour", "name"))
        == sketches
    )


def test_the_job_absorbs_late_rows_catches_up_and_counts_late_feedback(
    application, churn_reference, churn_frame, log_writer
):
    # Down for two days: the first run catches up from the oldest row.
    log_writer.write(churn_frame.head(10), at=hours_ago(48))
    log_writer.write(churn_frame.iloc[10:20], at=hours_ago(1))
    outcome = job_run(job="aggregate", model_name="churn")
    assert outcome.status == MonitoringJob.Status.OK
    assert outcome.result["hours"] >= 49
    state = MonitoringJob.objects.get(job="aggregate", model_name="churn")
    assert state.watermark == hour_floor(timezone.now())
    assert state.progress == 1.0
    assert state.runs == 1

    # A row logged late for the last hour lands in it on the next run.
    log_writer.write(churn_frame.iloc[20:25], at=hours_ago(1, minute=50))
    job_run(job="aggregate", model_name="churn")
    assert HourlyAggregate.objects.get(hour=hour_floor(hours_ago(1)), deployment_mode="primary").rows == 15

    # Feedback for a prediction two days old moves that hour's accuracy.
    old = PredictionLog.objects.filter(created_at__lt=hours_ago(40)).order_by("id")
    for entry in old[:4]:
        feedback_record(request_id=entry.request_id, actual=entry.prediction, by=application)
    wrong = old[4]
    feedback_record(request_id=wrong.request_id, actual="yes" if wrong.prediction == "no" else "no", by=application)
    feedback_record(
        request_id=wrong.request_id, actual="yes" if wrong.prediction == "no" else "no", by=application
    )  # once
    outcome = job_run(job="aggregate", model_name="churn")
    assert outcome.result["late_feedback_hours"] == 1
    hour = HourlyAggregate.objects.get(hour=hour_floor(hours_ago(48)), deployment_mode="primary")
    assert (hour.labelled, hour.correct) == (5, 4)

    summary = accuracy_summary(model_name="churn", start=hours_ago(72), end=timezone.now() + dt.timedelta(hours=1))
    assert summary[0]["accuracy"] == pytest.approx(0.8)
    assert summary[0]["validation_accuracy"] == churn_reference.validation_accuracy
    assert 0 < summary[0]["estimated_accuracy"] <= 1


def test_day_granularity_sums_hours_and_reads_latency_from_the_histograms(churn_reference, churn_frame, log_writer):
    _traffic(log_writer, churn_frame, hours=(3, 2))
    start, end = _span(4)
    hours_compute(model_name="churn", start=start, end=end)

    hourly = monitoring_series(model_name="churn", start=start, end=end, granularity="hour")
    daily = monitoring_series(model_name="churn", start=start - dt.timedelta(days=1), end=end, granularity="day")

    primary_hours = [p for p in hourly if p["mode"] == "primary"]
    primary_days = [p for p in daily if p["mode"] == "primary"]
    assert sum(p["rows"] for p in primary_days) == sum(p["rows"] for p in primary_hours) == 240
    assert primary_hours[0]["latency_ms"]["from"] == "raw rows"
    assert primary_days[0]["latency_ms"]["from"].startswith("histogram")
    assert 0.2 <= primary_days[0]["latency_ms"]["p50"] <= 45
    refused = [p for p in hourly if p["mode"] == "refused"]
    assert refused
    assert refused[0]["error_rate"] == 1.0


def test_macro_f1_is_scikit_learns():
    from sklearn.metrics import f1_score

    actual = ["a", "a", "b", "b", "c", "a"]
    predicted = ["a", "b", "b", "b", "a", "c"]
    confusion = {}
    for truth, guess in zip(actual, predicted, strict=True):
        confusion.setdefault(truth, {})[guess] = confusion.get(truth, {}).get(guess, 0) + 1
    assert macro_f1(confusion) == pytest.approx(f1_score(actual, predicted, average="macro"))


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("missing feature 'age'", "missing feature"),
        ("instances[0].age: expects a number, got text 'x'", "expects a number, got text"),
        ("is empty: send at least one row", "is empty"),
        ("ValueError: bad shape", "ValueError"),
        ("", "error"),
    ],
)
def test_error_kinds_leave_out_the_values(message, kind):
    assert error_kind(message) == kind
