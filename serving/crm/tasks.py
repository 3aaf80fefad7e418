"""Celery entry points of the CRM connector: each loads by id and calls one service."""

from celery import shared_task
from django.conf import settings

from serving.crm import services


# A refresh resumes from its cursor and a second attempt takes over from the first (its chunk's
# writes commit with the cursor, or carry idempotency keys), so it may be acknowledged late: a worker
# lost mid-way has the broker hand the refresh to another one.
@shared_task(
    name="serving.crm_refresh_run",
    queue="default",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=settings.CRM_REFRESH_TIME_LIMIT,
    time_limit=settings.CRM_REFRESH_TIME_LIMIT + 60,
)
def crm_refresh_run(refresh_id):
    """Run or resume one refresh; returns its final status."""
    refresh = services.crm_refresh_execute(refresh_id=refresh_id)
    return refresh.status if refresh is not None else None


@shared_task(name="serving.crm_refresh_scheduled", queue="default", time_limit=300)
def crm_refresh_scheduled():
    """Beat: start a refresh of the customers changed since the last one (or resume a lost one)."""
    refresh = services.crm_refresh_scheduled()
    return refresh.pk if refresh is not None else None
