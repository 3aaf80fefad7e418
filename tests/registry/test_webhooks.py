"""Webhook delivery to a real HTTP server on loopback, with its signature checked as a receiver would."""

import hashlib
import hmac
import json

import pytest
from django.contrib.auth import get_user_model

from governance.models import WebhookDelivery, WebhookSubscription
from governance.services import webhook_deliver, webhook_subscription_save
from governance.tasks import deliver_webhook
from registry import services
from tests.helpers import worker_runs_what_is_queued

pytestmark = pytest.mark.django_db

SECRET = "s3cret-for-tests"
User = get_user_model()


def _subscribe(url, events=(), by=None):
    """A subscription made the way the admin makes it: through the service, validated and audited."""
    by = by or User.objects.create_superuser(f"hooks-{User.objects.count()}", password="pw-hooks-1")
    return webhook_subscription_save(
        subscription=WebhookSubscription(name="gitops", url=url, secret=SECRET, events=list(events)), by=by
    )


def test_registration_and_promotion_are_delivered_signed(
    receiver, register, promote, django_capture_on_commit_callbacks
):
    _subscribe(receiver["url"])
    version = register()
    promote(version, "staging")
    events = list(WebhookDelivery.objects.order_by("id").values_list("event", flat=True))
    assert events == ["version.registered", "promotion.requested", "promotion.decided", "version.stage_changed"]
    for delivery in WebhookDelivery.objects.order_by("id"):
        assert webhook_deliver(delivery_id=delivery.pk) == "DELIVERED"
    assert len(receiver["received"]) == 4
    first = receiver["received"][0]
    expected = "sha256=" + hmac.new(SECRET.encode(), first["body"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(first["headers"]["X-Signature"], expected)
    payload = json.loads(first["body"])
    # The body a receiver signs again is the canonical JSON: sorted keys, no spaces.
    assert first["body"] == json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    assert list(payload) == sorted(payload)
    assert (first["headers"]["Content-Type"], first["headers"]["X-Event"]) == ("application/json", "version.registered")
    assert payload["event"] == "version.registered"
    assert payload["data"]["model"] == "iris-clf"
    assert payload["data"]["version"] == 1
    stage = json.loads(receiver["received"][3]["body"])
    assert stage["data"]["stage"] == "Staging"
    assert stage["data"]["from_stage"] == "None"
    delivered = WebhookDelivery.objects.get(event="version.registered")
    assert (delivered.response_status, delivered.response_body, delivered.attempts) == (200, "thanks", 1)
    assert delivered.last_attempt_at is not None


def test_a_subscription_gets_only_its_events(receiver, register):
    _subscribe(receiver["url"], events=["production.rolled_back"])
    register()
    assert not WebhookDelivery.objects.exists()


def test_failed_attempts_are_retried_with_backoff_then_delivered(receiver, register, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 5
    _subscribe(receiver["url"], events=["version.registered"])
    register()
    delivery = WebhookDelivery.objects.get()
    receiver["state"]["fail_first"] = 2
    # Eager apply runs the task's retries in this process, as a worker would after each countdown.
    result = deliver_webhook.apply(args=[delivery.pk])
    assert result.get() == "DELIVERED"
    delivery.refresh_from_db()
    assert delivery.attempts == 3
    assert delivery.status == "DELIVERED"
    assert len(receiver["received"]) == 3


def test_a_receiver_that_never_answers_well_ends_failed_with_its_answer_recorded(receiver, register, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    _subscribe(receiver["url"], events=["version.registered"])
    register()
    delivery = WebhookDelivery.objects.get()
    receiver["state"]["fail_first"] = 10
    assert deliver_webhook.apply(args=[delivery.pk]).get() == "FAILED"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("FAILED", 3, 503)
    assert delivery.response_body == "busy"


def test_an_unreachable_receiver_is_recorded_not_raised(register, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 1
    _subscribe("http://127.0.0.1:9/nothing-listens-here", events=["version.registered"])
    register()
    delivery = WebhookDelivery.objects.get()
    assert webhook_deliver(delivery_id=delivery.pk) == "FAILED"
    delivery.refresh_from_db()
    assert "Connection refused" in delivery.error or "URLError" in delivery.error


def test_retry_delay_doubles(settings):
    from governance.services.webhooks import retry_delay

    settings.WEBHOOK_RETRY_BASE_SECONDS = 30
    assert [retry_delay(n) for n in (1, 2, 3, 4)] == [30, 60, 120, 240]


def test_a_rollback_is_announced(receiver, register, promote, approver):
    _subscribe(receiver["url"], events=["production.rolled_back"])
    v1, v2 = register(), register()
    promote(v1)
    promote(v2)
    services.production_rollback(model_name="iris-clf", by=approver, reason="v2 misroutes", emergency=True)
    delivery = WebhookDelivery.objects.get()
    assert delivery.event == "production.rolled_back"
    assert (delivery.payload["data"]["version"], delivery.payload["data"]["replaced_version"]) == (1, 2)
    assert delivery.payload["data"]["emergency"] is True


def test_deliveries_are_queued_only_once_the_change_commits(receiver, register, django_capture_on_commit_callbacks):
    _subscribe(receiver["url"], events=["version.registered"])
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        register()
    delivery = WebhookDelivery.objects.get()
    sends = [callback for callback in callbacks if "webhook_event_emit" in callback.__qualname__]
    assert len(sends) == 1  # nothing is sent from inside the transaction...
    assert delivery.attempts == 0
    sends[0]()  # ...and on commit, its delivery task is queued (a worker sends it: tests/e2e/test_webhooks.py)


def test_stalled_deliveries_are_queued_again_but_not_those_in_their_backoff(register, settings):
    from datetime import timedelta

    from django.utils import timezone

    from governance.services.webhooks import retry_delay, webhooks_retry_stalled

    _subscribe("http://127.0.0.1:9/", events=["version.registered", "promotion.requested"])
    register()
    lost = WebhookDelivery.objects.get(event="version.registered")
    created = lost.created_at
    assert webhooks_retry_stalled(now=created + timedelta(seconds=50)) == 0  # its task may still be on its way
    assert webhooks_retry_stalled(now=created + timedelta(seconds=90)) == 1  # a minute without an attempt: lost
    now = timezone.now() + timedelta(minutes=5)
    assert webhooks_retry_stalled(now=now) == 1
    WebhookDelivery.objects.filter(pk=lost.pk).update(attempts=1, last_attempt_at=now)  # a worker took it
    assert webhooks_retry_stalled(now=now) == 0  # still within its backoff: its own retry will come
    longest = retry_delay(settings.WEBHOOK_MAX_ATTEMPTS)
    assert webhooks_retry_stalled(now=now + timedelta(seconds=longest + 30)) == 0  # a minute's grace after it
    later = now + timedelta(seconds=longest + 61)
    assert webhooks_retry_stalled(now=later) == 1  # its retry never came: queued again
    WebhookDelivery.objects.filter(pk=lost.pk).update(status="DELIVERED")
    assert webhooks_retry_stalled(now=later) == 0  # a delivered one is never sent again


def test_redeliver_in_the_admin_resets_the_delivery_sends_it_again_and_is_audited(
    register, client, engineer, auditor, receiver, django_capture_on_commit_callbacks
):
    from django.urls import reverse
    from django.utils import timezone

    from governance.models import AuditEntry

    _subscribe(receiver["url"], events=["version.registered"], by=engineer)
    register()
    delivery = WebhookDelivery.objects.get()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status="FAILED", attempts=5, error="refused", delivered_at=timezone.now()
    )
    changelist = reverse("admin:governance_webhookdelivery_changelist")
    client.force_login(auditor)  # may read deliveries, not send them again
    refused = client.post(changelist, {"action": "redeliver", "_selected_action": [delivery.pk]}, follow=True)
    assert "may not redeliver webhooks" in refused.content.decode()
    client.force_login(engineer)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        client.post(changelist, {"action": "redeliver", "_selected_action": [delivery.pk]}, follow=True)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.error, delivery.delivered_at) == ("PENDING", 0, "", None)
    entry = AuditEntry.objects.get(action="webhook.redelivered")
    assert (entry.actor_name, entry.before) == ("eli", {"status": "FAILED", "attempts": 5})
    assert entry.after == {"status": "PENDING", "event": "version.registered"}
    assert not receiver["received"]
    with worker_runs_what_is_queued():
        for callback in callbacks:  # the commit: its delivery task is queued, and sent
            callback()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("DELIVERED", 1)
    assert len(receiver["received"]) == 1


def test_a_subscription_to_every_event_is_made_in_the_admin(client, engineer, register):
    from django.urls import reverse

    client.force_login(engineer)
    response = client.post(
        reverse("admin:governance_webhooksubscription_add"),
        {"name": "everything", "url": "http://127.0.0.1:9/all", "secret": "s", "enabled": "on"},  # none ticked
    )
    assert response.status_code == 302
    subscription = WebhookSubscription.objects.get(name="everything")
    assert subscription.events == []
    register()
    assert WebhookDelivery.objects.filter(subscription=subscription, event="version.registered").exists()


def test_a_delivery_whose_task_was_lost_is_sent_by_the_beat_task(receiver, register):
    from datetime import timedelta

    from django.utils import timezone

    from governance.tasks import retry_stalled_webhooks

    _subscribe(receiver["url"], events=["version.registered"])
    register()  # its on-commit queueing never runs in this test's transaction: the task is lost, as with a broker down
    delivery = WebhookDelivery.objects.get()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(created_at=timezone.now() - timedelta(minutes=2))
    with worker_runs_what_is_queued():
        assert retry_stalled_webhooks.apply().get() == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("DELIVERED", 1)
    assert [json.loads(request["body"])["event"] for request in receiver["received"]] == ["version.registered"]
