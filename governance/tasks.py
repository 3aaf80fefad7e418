"""Celery entry points of the governance app: each loads by id and calls one service."""

from celery import shared_task

from governance import services
from governance.models import WebhookDelivery
from governance.services.webhooks import retry_delay, webhooks_retry_stalled


@shared_task(bind=True, name="governance.deliver_webhook", queue="default", acks_late=True, time_limit=120)
def deliver_webhook(self, delivery_id):
    """Send one delivery; a failed attempt is retried with exponential backoff up to WEBHOOK_MAX_ATTEMPTS."""
    status = services.webhook_deliver(delivery_id=delivery_id)
    if status == WebhookDelivery.Status.PENDING:
        attempts = WebhookDelivery.objects.values_list("attempts", flat=True).get(pk=delivery_id)
        raise self.retry(countdown=retry_delay(attempts), max_retries=None)
    return status


@shared_task(name="governance.anchor_audit_head", queue="default", time_limit=120)
def anchor_audit_head():
    """Send the audit chain's head out of the database (webhook event and log line)."""
    return services.audit_head_anchor()


@shared_task(name="governance.retry_stalled_webhooks", queue="default", time_limit=300)
def retry_stalled_webhooks():
    """Queue again the pending deliveries whose task was lost."""
    return webhooks_retry_stalled()
