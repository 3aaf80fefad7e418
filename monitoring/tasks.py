"""Celery entry points of monitoring: each takes names or ids, calls one service, and is safe to run twice."""

import logging

from celery import chain, shared_task
from django.conf import settings

from core.errors import ApplicationError
from monitoring import services
from monitoring.models import AlertNotification
from registry.models import ModelVersion

logger = logging.getLogger(__name__)


@shared_task(name="monitoring.schedule_jobs", queue="monitoring", time_limit=120)
def schedule_jobs():
    """Queue the aggregate and drift jobs of every monitored model (beat, hourly); returns how many."""
    models = services.models_to_monitor()
    for model_name in models:
        # Drift after the aggregates (a chain): each is its own task, so one model's slow job holds up no other.
        # Then its alert rules and retraining policy, on what the two jobs just stored.
        chain(
            run_job.si("aggregate", model_name), run_job.si("drift", model_name), evaluate_alerts.si(model_name)
        ).apply_async()
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


@shared_task(name="monitoring.evaluate_alerts", queue="monitoring", acks_late=True, time_limit=600)
def evaluate_alerts(model_name=None):
    """Evaluate the alert rules of one model (after its monitoring run) or of every monitored one (beat), then
    its retraining policy. Safe to run twice: an evaluation on the same data does not count again."""
    names = [model_name] if model_name else services.models_to_monitor()
    summary = {}
    for name in names:
        outcomes = services.alerts_evaluate(model_name=name)
        summary[name] = {
            "firing": [o.rule for o in outcomes if o.state == "firing"],
            "pending": [o.rule for o in outcomes if o.state == "pending"],
        }
        try:
            retraining = services.retraining_check(model_name=name)
        except ApplicationError as exc:  # the policy's user lost a permission, the data fails validation...
            logger.warning("retraining of %s not started: %s", name, exc)
            summary[name]["retraining_error"] = str(exc)
        else:
            summary[name]["retraining"] = retraining.pk if retraining else None
    return summary


@shared_task(name="monitoring.advance_retrainings", queue="monitoring", acks_late=True, time_limit=1800)
def advance_retrainings():
    """Register the finished runs of open retrainings and open their promotion requests (beat)."""
    return services.retrainings_advance()


@shared_task(bind=True, name="monitoring.send_alert_email", queue="alerts", acks_late=True, time_limit=120)
def send_alert_email(self, notification_id):
    """Send one alert e-mail; a failed attempt is retried with exponential backoff up to ALERT_EMAIL_MAX_ATTEMPTS."""
    status = services.alert_email_send(notification_id=notification_id)
    if status == AlertNotification.Status.PENDING:
        attempts = AlertNotification.objects.values_list("attempts", flat=True).get(pk=notification_id)
        raise self.retry(countdown=services.alerts.alert_email_retry_delay(attempts), max_retries=None)
    return status


@shared_task(name="monitoring.retry_stalled_alert_emails", queue="alerts", time_limit=300)
def retry_stalled_alert_emails():
    """Queue again the pending alert e-mails whose task was lost."""
    return services.alert_emails_retry_stalled()
