"""Executing a run on a worker: start it (or restart it after a lost worker), train, record, fail."""

from __future__ import annotations

import logging
import subprocess
import time
import traceback
from functools import lru_cache
from typing import TYPE_CHECKING

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from core.errors import ApplicationError, Conflict
from core.storage import artifact_write
from experiments import trainers
from experiments.models import Artifact, Metric, Run, RunTag
from experiments.services.datasets import dataset_frame_load
from experiments.signals import run_progress
from governance.models import AuditAction
from governance.services import audit_record

if TYPE_CHECKING:
    from core.permissions import Actor

logger = logging.getLogger(__name__)

_PROGRESS_WRITE_INTERVAL = 0.5  # seconds between progress writes to the database


@lru_cache(maxsize=1)
def source_commit() -> str:
    """The git commit of the running code: SOURCE_COMMIT if set (images have no .git), else git's HEAD, else ''."""
    if settings.SOURCE_COMMIT:
        return settings.SOURCE_COMMIT
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


class _RunStopped(Exception):
    """The run was killed while it trained: stop and keep nothing."""


class _ProgressReporter:
    """Writes a run's progress and heartbeat at most every half second, and signals every step.

    The write only touches a RUNNING run, so it also notices a kill within half a second,
    whatever the broker, and stops the fit.
    """

    def __init__(self, run_id):
        self.run_id = run_id
        self.last_write = 0.0

    def __call__(self, fraction, message):
        fraction = min(max(float(fraction), 0.0), 1.0)
        now = time.monotonic()
        if now - self.last_write >= _PROGRESS_WRITE_INTERVAL or fraction >= 1.0:
            updated = Run.objects.filter(pk=self.run_id, status=Run.Status.RUNNING).update(
                progress=fraction, progress_message=message[:200], heartbeat_at=timezone.now()
            )
            if not updated:
                raise _RunStopped
            self.last_write = now
        run_progress.send(sender=Run, run_id=self.run_id, fraction=fraction, message=message)


def run_start(*, run_id: int, task_id: str = "") -> Run | None:
    """Mark a run RUNNING for this attempt; returns None when there is nothing to do.

    Safe to call twice: a finished run is left alone, and a run found RUNNING is one whose
    worker was lost (the broker redelivered it), so it is started again from scratch until
    RUN_MAX_ATTEMPTS is reached, then marked FAILED.
    """
    with transaction.atomic():
        run = Run.objects.select_for_update().filter(pk=run_id).first()
        if run is None:
            logger.warning("run %s does not exist; its task is dropped", run_id)
            return None
        if run.is_terminal:
            return None
        if run.attempts >= settings.RUN_MAX_ATTEMPTS:
            run_fail_locked(run, reason=f"worker lost: the run was interrupted {run.attempts} times, giving up")
            return None
        previous_status = run.status
        run.metrics.all().delete()
        run.artifacts.all().delete()
        now = timezone.now()
        run.status = Run.Status.RUNNING
        run.attempts = F("attempts") + 1
        run.start_time = now
        run.heartbeat_at = now
        run.progress = 0.0
        run.progress_message = "starting"
        run.error = ""
        run.latest_metrics = {}
        if task_id:
            run.celery_task_id = task_id
        run.save()
        run.refresh_from_db()
        audit_record(
            actor=None,
            actor_name="worker",
            action=AuditAction.RUN_STARTED,
            obj=run,
            before={"status": previous_status},
            after={"status": run.status, "attempt": run.attempts},
        )
    if run.parent_id:
        Run.objects.filter(pk=run.parent_id, status=Run.Status.QUEUED).update(
            status=Run.Status.RUNNING, start_time=now, heartbeat_at=now
        )
    return run


def run_execute(*, run_id: int, task_id: str = "") -> Run | None:
    """Train a queued run and record its metrics, history and artifacts. Called by the Celery task."""
    run = run_start(run_id=run_id, task_id=task_id)
    if run is None:
        return Run.objects.filter(pk=run_id).first()
    report = _ProgressReporter(run.pk)
    history = []
    try:
        report(0.02, "loading dataset")
        frame = dataset_frame_load(version=run.dataset)
        params = _typed_params(run)
        result = trainers.train(
            frame,
            target=run.dataset.target,
            algorithm=run.algorithm,
            params=params,
            on_progress=report,
            on_history=lambda key, step, value: history.append((key, step, float(value), timezone.now())),
        )
        _run_finish(run, result=result, history=history)
    except _RunStopped:
        logger.info("run %s was stopped while training", run.pk)
    except ApplicationError as exc:
        run_fail(run_id=run.pk, reason=str(exc))
    except SoftTimeLimitExceeded:
        run_fail(run_id=run.pk, reason=f"time limit of {settings.TRAINING_TIME_LIMIT} s exceeded")
    except Exception as exc:  # a bug or a resource fault: recorded on the run, and in the worker log
        logger.exception("run %s failed", run.pk)
        run_fail(run_id=run.pk, reason=f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc(limit=5)}")
    report_parent_progress(run)
    return Run.objects.get(pk=run.pk)


def _typed_params(run):
    raw = dict(run.params.values_list("key", "value"))
    return trainers.params_validate(run.algorithm, raw)


def _run_finish(run, *, result, history):
    base = f"runs/{run.pk}"
    files = {**result.artifacts, "model/model.joblib": result.model_bytes}
    artifacts = [
        Artifact(run=run, path=path, size_bytes=len(content), sha256=artifact_write(f"{base}/{path}", content))
        for path, content in sorted(files.items())
    ]
    now = timezone.now()
    with transaction.atomic():
        locked = Run.objects.select_for_update().get(pk=run.pk)
        if locked.status != Run.Status.RUNNING or locked.attempts != run.attempts:
            raise Conflict(f"run {run.pk} changed state while training ({locked.status})")
        Artifact.objects.bulk_create(artifacts)
        Metric.objects.bulk_create(
            [Metric(run=run, key=key, value=value, step=step, timestamp=at) for key, step, value, at in history]
            + [Metric(run=run, key=key, value=value, step=0, timestamp=now) for key, value in result.metrics.items()],
            batch_size=1000,
        )
        latest = {key: value for key, _, value, _ in history}
        latest.update(result.metrics)
        locked.latest_metrics = latest
        locked.status = Run.Status.FINISHED
        locked.end_time = now
        locked.heartbeat_at = now
        locked.progress = 1.0
        locked.progress_message = "finished"
        locked.model_path = f"{base}/model/model.joblib"
        locked.model_sha256 = result.model_sha256
        locked.save()
        RunTag.objects.update_or_create(run=run, key="classes", defaults={"value": ",".join(result.classes)[:5000]})
        audit_record(
            actor=None,
            actor_name="worker",
            action=AuditAction.RUN_FINISHED,
            obj=locked,
            before={"status": Run.Status.RUNNING},
            after={"status": Run.Status.FINISHED, "metrics": result.metrics, "model_sha256": result.model_sha256},
        )
    run_progress.send(sender=Run, run_id=run.pk, fraction=1.0, message="finished")


def run_fail_locked(run: Run, *, reason: str, status: Run.Status = Run.Status.FAILED, by: Actor = None) -> None:
    """End a run the caller has locked (select_for_update) as FAILED or KILLED, with the reason; audited."""
    previous = run.status
    now = timezone.now()
    run.status = status
    run.error = reason[:20000]
    run.end_time = now
    run.start_time = run.start_time or now
    run.progress_message = "failed" if status == Run.Status.FAILED else "killed"
    run.save(update_fields=["status", "error", "end_time", "start_time", "progress_message"])
    audit_record(
        actor=by,
        actor_name=None if by else "worker",
        action=AuditAction.RUN_FAILED if status == Run.Status.FAILED else AuditAction.RUN_KILLED,
        obj=run,
        before={"status": previous},
        after={"status": status},
        reason=reason[:2000],
    )


def run_fail(*, run_id: int, reason: str) -> Run:
    """Mark a run FAILED with the reason, unless it already ended."""
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run_id)
        if run.is_terminal:
            return run
        run_fail_locked(run, reason=reason)
    return run


def report_parent_progress(run: Run) -> None:
    """A sweep parent's progress is the share of its children that have ended."""
    if not run.parent_id:
        return
    children = Run.objects.filter(parent_id=run.parent_id)
    total = children.count()
    ended = children.filter(status__in=Run.TERMINAL_STATUSES).count()
    Run.objects.filter(pk=run.parent_id).exclude(status__in=Run.TERMINAL_STATUSES).update(
        progress=ended / total if total else 1.0,
        progress_message=f"{ended}/{total} runs ended",
        heartbeat_at=timezone.now(),
    )
