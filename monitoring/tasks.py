"""Celery entry points of monitoring: each takes names or ids, calls one service, and is safe to run twice."""

import logging

from celery import chain, shared_task
from django.conf import settings

from monitoring import services
from registry.models import ModelVersion

logger = logging.getLogger(__name__)


@shared_task(name="monitoring.schedule_jobs", queue="monitoring", time_limit=120)
def schedule_jobs():
    """Queue the aggregate and drift jobs of every monitored model (beat, hourly); returns how many."""
    models = services.models_to_monitor()
    for model_name in models:
        # Drift after the aggregates (a chain): each is its own task, so one model's slow job holds up no other.
        chain(run_job.si("aggregate", model_name), run_job.si("drift", model_name)).apply_async()
    return len(models)


@shared_task(
    name="monitoring.run_job",
    queue="monitoring",
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=settings.MONITORING_JOB_TIME_LIMIT,
)
def run_job(job, model_name):
    """One job for one model. Idempotent (hours are rewritten whole); a second run at once is skipped."""
    try:
        outcome = services.job_run(job=job, model_name=model_name)
    except services.JobBusy as exc:
        logger.info("%s: skipped", exc)
        return {"skipped": str(exc)}
    return outcome.result


@shared_task(
    name="monitoring.build_reference",
    queue="monitoring",
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=settings.MONITORING_JOB_TIME_LIMIT,
)
def build_reference(version_id):
    """Build a version's drift reference (queued when it is registered); rebuilding gives the same rows."""
    version = ModelVersion.objects.filter(pk=version_id).first()
    if version is None:
        return None
    reference = services.drift_reference_build(version=version)
    return {"version": str(version), "rows": reference.n_rows, "seconds": round(reference.build_seconds, 3)}
