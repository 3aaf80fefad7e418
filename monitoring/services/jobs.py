"""The scheduled jobs, one model at a time, never two runs of one (job, model) at once.

`aggregate`: the hourly aggregates and sketches from the job's watermark (less MONITORING_LATE_HOURS,
so rows logged late land in their hour) up to the current hour, plus the older hours whose rows got
feedback since the last run; after downtime it catches up from where it stopped (at most
PREDICTION_LOG_RETENTION_DAYS back). `drift`: the exact drift of the last MONITORING_DRIFT_WINDOW of
every version that served in it.

One run per (job, model): a PostgreSQL advisory lock held by the run's connection (released if the
worker dies, since its connection goes), or on SQLite a lease on the job's row that a run takes with
one conditional UPDATE and that lapses after the task's time limit. Progress and the last result are
on the MonitoringJob row, shown in the admin.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Min, Q
from django.utils import timezone

from monitoring.models import MonitoringJob
from monitoring.services.aggregates import HOUR, hours_compute, hours_with_late_feedback
from monitoring.services.drift import drift_compute
from monitoring.windows import hour_floor, window_parse
from registry.models import RegisteredModel
from serving.models import Deployment, PredictionLog

if TYPE_CHECKING:
    from collections.abc import Iterator

    from monitoring.models import DriftRun

logger = logging.getLogger(__name__)
Job = MonitoringJob.Job
_LOCK_NAMESPACE = 0x6D6F6E  # "mon": the first key of our advisory locks


class JobBusy(Exception):
    """Another run of the same job for the same model holds the lock."""


@dataclass(frozen=True)
class JobOutcome:
    """What a job run did (stored as the job's last result)."""

    job: str
    model_name: str
    status: str
    result: dict


def _lock_key(job, model_name):
    return zlib.crc32(f"{job}:{model_name}".encode()) - 2**31


_held_here = set()  # PostgreSQL's advisory locks are re-entrant within a session: this process's own runs
_held_here_lock = threading.Lock()


@contextlib.contextmanager
def job_lock(*, job: Job | str, model_name: str, lease_seconds: float) -> Iterator[MonitoringJob]:
    """Hold the (job, model) lock for the block, or raise JobBusy."""
    with _held_here_lock:
        if (job, model_name) in _held_here:
            raise JobBusy(f"{job} of {model_name} is already running")
        _held_here.add((job, model_name))
    try:
        with _job_lock(job=job, model_name=model_name, lease_seconds=lease_seconds) as state:
            yield state
    finally:
        with _held_here_lock:
            _held_here.discard((job, model_name))


@contextlib.contextmanager
def _job_lock(*, job, model_name, lease_seconds):
    state, _ = MonitoringJob.objects.get_or_create(job=job, model_name=model_name)
    if connection.vendor == "postgresql":
        key = _lock_key(job, model_name)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [_LOCK_NAMESPACE, key])
            if not cursor.fetchone()[0]:
                raise JobBusy(f"{job} of {model_name} is already running")
        try:
            yield state
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [_LOCK_NAMESPACE, key])
        return
    now = timezone.now()
    taken = MonitoringJob.objects.filter(pk=state.pk).filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
    if not taken.update(lease_until=now + dt.timedelta(seconds=lease_seconds)):
        raise JobBusy(f"{job} of {model_name} is already running")
    try:
        yield state
    finally:
        MonitoringJob.objects.filter(pk=state.pk).update(lease_until=None)


def _progress(state, fraction, message):
    MonitoringJob.objects.filter(pk=state.pk).update(progress=round(fraction, 4), progress_message=message[:200])


def _aggregate(state, *, now):
    current_hour = hour_floor(now)
    oldest = hour_floor(now - dt.timedelta(days=settings.PREDICTION_LOG_RETENTION_DAYS))
    if state.watermark is None:
        first = PredictionLog.objects.filter(model_name=state.model_name).aggregate(first=Min("created_at"))["first"]
        start = max(hour_floor(first), oldest) if first else current_hour
    else:
        start = max(state.watermark - dt.timedelta(hours=settings.MONITORING_LATE_HOURS), oldest)
    end = current_hour + HOUR  # the current hour too, redone next time
    feedback_since = state.feedback_seen_at or dt.datetime.min.replace(tzinfo=dt.UTC)
    late = hours_with_late_feedback(model_name=state.model_name, since=feedback_since, before=start)
    total = len(late) + int((end - start) / HOUR)
    done = 0

    def on_hour(hour):
        nonlocal done
        done += 1
        _progress(state, done / max(total, 1), f"{hour:%Y-%m-%d %H}:00 ({done} of {total} hours)")

    written = {"hours": 0, "aggregates": 0, "sketches": 0}
    for hour in late:
        result = hours_compute(model_name=state.model_name, start=hour, end=hour + HOUR, on_hour=on_hour)
        for key in written:
            written[key] += getattr(result, key)
    # Day by day, moving the watermark after each, so a run killed midway resumes where it stopped.
    day_start = start
    while day_start < end:
        day_end = min(day_start + dt.timedelta(days=1), end)
        result = hours_compute(model_name=state.model_name, start=day_start, end=day_end, on_hour=on_hour)
        for key in written:
            written[key] += getattr(result, key)
        MonitoringJob.objects.filter(pk=state.pk).update(watermark=min(day_end, current_hour))
        day_start = day_end
    MonitoringJob.objects.filter(pk=state.pk).update(feedback_seen_at=now)
    return {
        **written,
        "from": start.isoformat(),
        "to": end.isoformat(),
        "late_feedback_hours": len(late),
    }


def _drift(state, *, now, trigger):
    window = window_parse(settings.MONITORING_DRIFT_WINDOW, now=now)
    versions = _versions_to_watch(state.model_name, window)
    runs = []
    for index, version in enumerate(versions):
        _progress(state, index / max(len(versions), 1), f"v{version}")
        run = drift_compute(model_name=state.model_name, window=window, version=version, trigger=trigger)
        runs.append(
            {
                "version": version,
                "status": run.status,
                "rows": run.rows,
                "dataset_drift": run.dataset_drift,
                "drifted": [r.name for r in run.results.filter(verdict=True, drifted=True)] if run.pk else [],
                "run_id": run.pk,
            }
        )
    return {"window": window.label, "versions": runs}


def _versions_to_watch(model_name, window):
    """Versions deployed now (any environment and mode) and versions that served in the window."""
    deployed = set(
        Deployment.objects.filter(model__name=model_name, status=Deployment.Status.ACTIVE).values_list(
            "version__version", flat=True
        )
    )
    served = set(
        PredictionLog.objects.filter(
            model_name=model_name, created_at__gte=window.start, created_at__lt=window.end, version__gt=0
        )
        .values_list("version", flat=True)
        .distinct()
    )
    return sorted(deployed | served)


def job_run(
    *, job: Job | str, model_name: str, trigger: DriftRun.Trigger | str = "schedule", now: dt.datetime | None = None
) -> JobOutcome:
    """Run one monitoring job for one model now; JobBusy if it is already running. Returns its outcome."""
    job = Job(job)
    now = now or timezone.now()
    with job_lock(job=job, model_name=model_name, lease_seconds=settings.MONITORING_JOB_TIME_LIMIT) as state:
        started = time.perf_counter()
        MonitoringJob.objects.filter(pk=state.pk).update(
            status=MonitoringJob.Status.RUNNING,
            progress=0.0,
            progress_message="starting",
            started_at=now,
            last_error="",
        )
        state.refresh_from_db()
        try:
            if job == Job.AGGREGATE:
                result = _aggregate(state, now=now)
            else:
                result = _drift(state, now=now, trigger=trigger)
        except Exception as exc:
            MonitoringJob.objects.filter(pk=state.pk).update(
                status=MonitoringJob.Status.FAILED,
                finished_at=timezone.now(),
                last_error=f"{type(exc).__name__}: {exc}",
            )
            raise
        result["seconds"] = round(time.perf_counter() - started, 3)
        with transaction.atomic():
            state = MonitoringJob.objects.select_for_update().get(pk=state.pk)
            state.status = MonitoringJob.Status.OK
            state.progress = 1.0
            state.progress_message = "done"
            state.finished_at = timezone.now()
            state.runs += 1
            state.last_result = result
            state.save()
    return JobOutcome(job=job.value, model_name=model_name, status=state.status, result=result)


def models_to_monitor(*, now: dt.datetime | None = None) -> list[str]:
    """Registered models with an active deployment or with logged predictions within the retention period."""
    now = now or timezone.now()
    since = now - dt.timedelta(days=settings.PREDICTION_LOG_RETENTION_DAYS)
    deployed = set(Deployment.objects.filter(status=Deployment.Status.ACTIVE).values_list("model__name", flat=True))
    logged = set(
        PredictionLog.objects.filter(created_at__gte=since).values_list("model_name", flat=True).distinct().order_by()
    )
    registered = set(RegisteredModel.objects.filter(name__in=deployed | logged).values_list("name", flat=True))
    return sorted(registered)
