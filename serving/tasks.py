"""Celery entry points of serving (Celery discovers each app's `tasks` module)."""

from celery import shared_task

from serving.crm.tasks import crm_refresh_run, crm_refresh_scheduled
from serving.predlog import prediction_log_retention_apply

__all__ = ["crm_refresh_run", "crm_refresh_scheduled", "prediction_log_retention"]


@shared_task(name="serving.prediction_log_retention", queue="default", acks_late=True, time_limit=900)
def prediction_log_retention():
    """Drop the prediction log's days past PREDICTION_LOG_RETENTION_DAYS and make the next week's partitions."""
    result = prediction_log_retention_apply()
    return {"created": list(result.created), "dropped": list(result.dropped), "deleted_rows": result.deleted_rows}
