"""Sweeps and lost runs: close a sweep once its members ended, fail runs whose worker died."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.errors import Conflict
from core.metrics import lower_is_better
from experiments.models import Metric, Run, RunTag
from experiments.services.execution import report_parent_progress, run_fail, run_fail_locked
from governance.models import AuditAction
from governance.services import audit_record

if TYPE_CHECKING:
    from datetime import datetime

logger = logging.getLogger(__name__)


def sweep_finalize(*, parent_id: int) -> Run | None:
    """Close a sweep: record its best child by the sweep metric; FAILED if no child finished."""
    with transaction.atomic():
        parent = Run.objects.select_for_update().filter(pk=parent_id).first()
        if parent is None or parent.is_terminal:
            return parent
        children = list(parent.children.all())
        unfinished = [child for child in children if not child.is_terminal]
        if unfinished:
            raise Conflict(f"sweep {parent.pk} still has {len(unfinished)} runs in progress")
        finished = [c for c in children if c.status == Run.Status.FINISHED and parent.sweep_metric in c.latest_metrics]
        now = timezone.now()
        if not finished:
            run_fail_locked(parent, reason=f"none of the {len(children)} runs finished with {parent.sweep_metric}")
            return parent
        lower = lower_is_better(parent.sweep_metric)
        best = (min if lower else max)(finished, key=lambda child: child.latest_metrics[parent.sweep_metric])
        parent.best_child = best
        parent.latest_metrics = dict(best.latest_metrics)
        parent.status = Run.Status.FINISHED
        parent.start_time = parent.start_time or min(c.start_time for c in finished)
        parent.end_time = now
        parent.progress = 1.0
        parent.progress_message = f"best: run #{best.pk}"
        parent.save()
        Metric.objects.bulk_create(
            Metric(run=parent, key=key, value=value, step=0, timestamp=now)
            for key, value in best.latest_metrics.items()
        )
        RunTag.objects.update_or_create(run=parent, key="sweep.best_run_id", defaults={"value": str(best.pk)})
        audit_record(
            actor=None,
            actor_name="worker",
            action=AuditAction.RUN_FINISHED,
            obj=parent,
            after={
                "status": parent.status,
                "best_child": best.pk,
                "metric": parent.sweep_metric,
                "value": best.latest_metrics[parent.sweep_metric],
                "children_failed": len(children) - len(finished),
            },
        )
    return parent


def runs_reap_lost(*, now: datetime | None = None) -> list[int]:
    """Fail RUNNING runs whose heartbeat stopped longer ago than RUN_HEARTBEAT_TIMEOUT, and runs still QUEUED
    RUN_QUEUED_TIMEOUT after their launch (their broker message was lost); returns their ids."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.RUN_HEARTBEAT_TIMEOUT)
    lost = list(
        Run.objects.filter(status=Run.Status.RUNNING, heartbeat_at__lt=cutoff, children__isnull=True).values_list(
            "pk", "heartbeat_at"
        )
    )
    for run_id, heartbeat in lost:
        run = run_fail(run_id=run_id, reason=f"worker lost: no heartbeat since {heartbeat:%Y-%m-%d %H:%M:%S %Z}")
        report_parent_progress(run)
    # Failed, not dispatched again: a message only late (workers busy) would then run twice, the second
    # delivery taken for a redelivery after a lost worker. A failed run says why and is launched again.
    queued_cutoff = now - timedelta(seconds=settings.RUN_QUEUED_TIMEOUT)
    never_started = list(
        Run.objects.filter(status=Run.Status.QUEUED, created_at__lt=queued_cutoff, children__isnull=True).values_list(
            "pk", flat=True
        )
    )
    for run_id in never_started:
        run = run_fail(
            run_id=run_id,
            reason=f"never started: still queued after {settings.RUN_QUEUED_TIMEOUT} s (RUN_QUEUED_TIMEOUT), "
            "its broker message was lost; launch it again",
        )
        report_parent_progress(run)
    lost += [(run_id, None) for run_id in never_started]
    # A sweep whose children all ended but whose chord callback never ran (a child task
    # crashed or its message was lost) is closed here.
    stranded = (
        Run.objects.filter(status__in=[Run.Status.QUEUED, Run.Status.RUNNING], children__isnull=False)
        .exclude(children__status__in=[Run.Status.QUEUED, Run.Status.RUNNING])
        .distinct()
        .values_list("pk", flat=True)
    )
    for parent_id in list(stranded):
        sweep_finalize(parent_id=parent_id)
    return [run_id for run_id, _ in lost]
