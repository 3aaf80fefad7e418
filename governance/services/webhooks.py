"""Webhooks: registry events as signed JSON POSTs, recorded per delivery and retried with backoff.

An event writes its delivery rows in the transaction of the change (an outbox), so an event
is sent if and only if the change committed; the Celery task sends them after commit.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import urllib.error
import urllib.request
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from core.permissions import permission_require
from governance.models import AuditAction, AuditEntry, WebhookDelivery, WebhookSubscription
from governance.services.audit import audit_head, audit_record, head_logger

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime

    from core.permissions import Actor

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Signature"


def webhook_signature(secret: str, body: bytes) -> str:
    """ "sha256=<hex HMAC-SHA256 of the body under the secret>", as receivers recompute it."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _enqueue(delivery_ids, countdown=0, queue=None):
    from governance.tasks import deliver_webhook

    options = {"queue": queue} if queue else {}
    for delivery_id in delivery_ids:
        try:
            deliver_webhook.apply_async(args=[delivery_id], countdown=countdown, **options)
        except Exception as exc:  # broker down: the retry_pending_webhooks beat task sends it later
            logger.warning("could not queue webhook delivery %s: %s", delivery_id, exc)


def webhook_event_emit(
    *, event: WebhookSubscription.Event, data: dict[str, Any], queue: str | None = None
) -> list[WebhookDelivery]:
    """Record one delivery per subscription that wants `event`; they are sent once the transaction commits.

    `queue` sends them (and their retries) on a Celery queue of their own (alerts: `alerts`)."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("webhook_event_emit must run inside the transaction of the change it announces.")
    payload = json.loads(
        json.dumps(
            {"id": uuid.uuid4().hex, "event": event, "occurred_at": timezone.now(), "data": data},
            cls=DjangoJSONEncoder,
        )
    )
    deliveries = [
        WebhookDelivery.objects.create(subscription=subscription, event=event, payload=payload)
        for subscription in WebhookSubscription.objects.filter(enabled=True)
        if subscription.wants(event)
    ]
    if deliveries:
        ids = [delivery.pk for delivery in deliveries]
        transaction.on_commit(lambda: _enqueue(ids, queue=queue))
    return deliveries


def retry_delay(attempts: int) -> int:
    """Seconds before the next attempt: the base doubled per attempt so far (30 s, 60 s, 2 min, ...)."""
    return settings.WEBHOOK_RETRY_BASE_SECONDS * 2 ** max(attempts - 1, 0)


def webhook_deliver(*, delivery_id: int) -> str:
    """Send one pending delivery once and record the outcome; returns its status afterwards.

    2xx delivers it; anything else (an error status, a refused connection, a timeout) leaves it
    PENDING for another attempt, or FAILED after WEBHOOK_MAX_ATTEMPTS.
    """
    with transaction.atomic():
        delivery = WebhookDelivery.objects.select_for_update().select_related("subscription").get(pk=delivery_id)
        if delivery.status != WebhookDelivery.Status.PENDING:
            return delivery.status
        delivery.attempts += 1
        delivery.last_attempt_at = timezone.now()
        delivery.save(update_fields=["attempts", "last_attempt_at"])
    body = json.dumps(delivery.payload, sort_keys=True, separators=(",", ":")).encode()
    status_code, response_body, error = None, "", ""
    try:
        request = urllib.request.Request(  # refuses a malformed URL (ValueError): recorded like any failure
            delivery.subscription.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": "mlops-site-webhooks/1",
                SIGNATURE_HEADER: webhook_signature(delivery.subscription.secret, body),
                "X-Event": delivery.event,
                "X-Delivery-Id": str(delivery.pk),
            },
        )
        with urllib.request.urlopen(request, timeout=settings.WEBHOOK_TIMEOUT_SECONDS) as response:
            status_code, response_body = response.status, response.read(2000).decode(errors="replace")
    except urllib.error.HTTPError as exc:
        status_code, response_body, error = exc.code, exc.read(2000).decode(errors="replace"), f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:  # refused, unreachable, timed out, a malformed URL
        error = f"{type(exc).__name__}: {exc}"
    delivered = status_code is not None and 200 <= status_code < 300
    if delivered:
        status = WebhookDelivery.Status.DELIVERED
    elif delivery.attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
        status = WebhookDelivery.Status.FAILED
    else:
        status = WebhookDelivery.Status.PENDING
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=status,
        response_status=status_code,
        response_body=response_body,
        error=error,
        delivered_at=timezone.now() if delivered else None,
    )
    return status


def webhook_redeliver(*, delivery_ids: Iterable[int], by: Actor) -> int:
    """Send these deliveries again from scratch (the admin's "Redeliver" action), audited; returns how many."""
    permission_require(by, "governance.change_webhooksubscription", doing="redeliver webhooks")
    with transaction.atomic():
        deliveries = list(WebhookDelivery.objects.select_for_update().filter(pk__in=delivery_ids).order_by("id"))
        ids = [delivery.pk for delivery in deliveries]
        WebhookDelivery.objects.filter(pk__in=ids).update(
            status=WebhookDelivery.Status.PENDING, attempts=0, error="", delivered_at=None
        )
        for delivery in deliveries:
            audit_record(
                actor=by,
                action=AuditAction.WEBHOOK_REDELIVERED,
                obj=delivery,
                before={"status": delivery.status, "attempts": delivery.attempts},
                after={"status": WebhookDelivery.Status.PENDING, "event": delivery.event},
            )
        transaction.on_commit(lambda: _enqueue(ids))
    return len(ids)


def webhooks_retry_stalled(*, now: datetime | None = None) -> int:
    """Queue pending deliveries whose task was lost (broker down at commit, worker gone); returns how many."""
    now = now or timezone.now()
    stalled_before = now - timedelta(seconds=retry_delay(settings.WEBHOOK_MAX_ATTEMPTS) + 60)
    ids = list(
        WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING, created_at__lt=now - timedelta(minutes=1))
        .exclude(last_attempt_at__gte=stalled_before)
        .values_list("pk", flat=True)[:500]
    )
    _enqueue(ids)
    return len(ids)


def audit_head_anchor() -> tuple[int | None, str]:
    """Send the audit chain's head out of the database: an audit.anchored event and a log line.

    Receivers keep the hashes; `verify_audit_log --expect-head HASH` then proves the log still holds
    that entry, so a log truncated or cut short since fails. Returns the anchored (id, hash).
    """
    with transaction.atomic():
        head_id, head_hash = audit_head()
        webhook_event_emit(
            event=WebhookSubscription.Event.AUDIT_ANCHORED,
            data={"entry_id": head_id, "entry_hash": head_hash, "entries": AuditEntry.objects.count()},
        )
    head_logger.info("audit anchor #%s %s", head_id, head_hash)
    return head_id, head_hash


def webhook_subscription_save(*, subscription: WebhookSubscription, by: Actor) -> WebhookSubscription:
    """Create or edit a subscription, audited (the secret itself is never written to the trail)."""
    creating = subscription.pk is None
    permission_require(
        by,
        "governance.add_webhooksubscription" if creating else "governance.change_webhooksubscription",
        doing="create webhook subscriptions" if creating else "edit webhook subscriptions",
    )
    subscription.full_clean()

    def snapshot(obj):
        return {
            "name": obj.name,
            "url": obj.url,
            "events": obj.events,
            "enabled": obj.enabled,
            "secret_sha256": hashlib.sha256(obj.secret.encode()).hexdigest()[:12],
        }

    with transaction.atomic():
        before = None
        if subscription.pk is not None:
            before = snapshot(WebhookSubscription.objects.select_for_update().get(pk=subscription.pk))
        subscription.save()
        audit_record(
            actor=by,
            action=AuditAction.WEBHOOK_UPDATED if before else AuditAction.WEBHOOK_CREATED,
            obj=subscription,
            before=before,
            after=snapshot(subscription),
        )
    return subscription
