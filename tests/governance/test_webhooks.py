"""The webhook service's promises one by one, against a real HTTP receiver on loopback: what a delivery
sends (method, headers, canonical signed body), what it records of each answer, when it gives up, and
what a subscription's save writes to the audit trail (never the secret) and whom it refuses."""

import hashlib
import json
import uuid
from datetime import datetime

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction

from core.errors import NotPermitted
from governance.models import AuditEntry, WebhookDelivery, WebhookSubscription
from governance.services import webhook_deliver, webhook_event_emit, webhook_subscription_save
from governance.services.webhooks import _enqueue, webhook_signature
from tests.helpers import user_with_permission

pytestmark = pytest.mark.django_db

User = get_user_model()
SECRET = "s3cret-for-tests"
EVENT = WebhookSubscription.Event.VERSION_REGISTERED


@pytest.fixture
def owner(django_user_model):
    return django_user_model.objects.create_superuser("hook-owner", password="pw-hook-owner-1")


def _subscribe(url, owner, events=(EVENT,), name="ci"):
    return webhook_subscription_save(
        subscription=WebhookSubscription(name=name, url=url, secret=SECRET, events=list(events)), by=owner
    )


def _delivery(url, owner, data=None):
    _subscribe(url, owner)
    with transaction.atomic():
        (delivery,) = webhook_event_emit(event=EVENT, data=data or {"model": "iris-clf", "version": 3})
    return delivery


def test_a_delivery_is_a_signed_post_with_its_event_and_id(receiver, owner):
    delivery = _delivery(receiver["url"], owner, data={"version": 3, "model": "iris-clf"})
    assert webhook_deliver(delivery_id=delivery.pk) == "DELIVERED"
    (request,) = receiver["received"]
    assert (request["method"], request["path"]) == ("POST", "/hook")
    headers = request["headers"]
    assert headers["User-Agent"] == "mlops-site-webhooks/1"
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Event"] == "version.registered"
    assert headers["X-Delivery-Id"] == str(delivery.pk)
    assert headers["X-Signature"] == webhook_signature(SECRET, request["body"])
    body = json.loads(request["body"])
    assert set(body) == {"id", "event", "occurred_at", "data"}
    assert body["data"] == {"model": "iris-clf", "version": 3}
    assert body["event"] == "version.registered"
    assert len(body["id"]) == 32
    assert body["occurred_at"].endswith("Z") or "+" in body["occurred_at"]  # an ISO time with its zone


def test_every_2xx_delivers_and_what_came_back_is_recorded(receiver, owner):
    receiver["state"].update(status=204, body=b"")
    delivery = _delivery(receiver["url"], owner)
    assert webhook_deliver(delivery_id=delivery.pk) == "DELIVERED"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.response_status, delivery.error) == ("DELIVERED", 204, "")
    assert delivery.delivered_at is not None

    receiver["state"].update(status=299, body=b"x" * 5000)  # the answer's body is kept to its first 2,000 bytes
    other = WebhookDelivery.objects.create(subscription=delivery.subscription, event=EVENT, payload={"n": 2})
    assert webhook_deliver(delivery_id=other.pk) == "DELIVERED"
    other.refresh_from_db()
    assert (other.response_status, other.response_body) == (299, "x" * 2000)


def test_an_error_status_is_recorded_and_left_for_another_attempt(receiver, owner, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 2
    receiver["state"].update(status=400, body=b"e" * 3000)
    delivery = _delivery(receiver["url"], owner)
    assert webhook_deliver(delivery_id=delivery.pk) == "PENDING"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("PENDING", 1, 400)
    assert delivery.error == "HTTP 400"
    assert delivery.response_body == "e" * 2000
    assert delivery.delivered_at is None
    assert webhook_deliver(delivery_id=delivery.pk) == "FAILED"  # the last attempt allowed
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("FAILED", 2)
    assert delivery.last_attempt_at is not None


def test_a_delivery_that_is_not_pending_is_not_sent_again(receiver, owner):
    delivery = _delivery(receiver["url"], owner)
    for status in ("DELIVERED", "FAILED"):
        WebhookDelivery.objects.filter(pk=delivery.pk).update(status=status, attempts=1)
        assert webhook_deliver(delivery_id=delivery.pk) == status
        delivery.refresh_from_db()
        assert delivery.attempts == 1
    assert receiver["received"] == []


def test_a_receiver_too_slow_or_a_bad_url_is_an_error_recorded(receiver, owner, settings):
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.2
    receiver["state"]["delay"] = 1
    delivery = _delivery(receiver["url"], owner)
    assert webhook_deliver(delivery_id=delivery.pk) == "PENDING"
    delivery.refresh_from_db()
    assert "timed out" in delivery.error
    assert (delivery.response_status, delivery.response_body) == (None, "")

    WebhookSubscription.objects.filter(pk=delivery.subscription_id).update(url="not a url")
    other = WebhookDelivery.objects.create(subscription=delivery.subscription, event=EVENT, payload={})
    assert webhook_deliver(delivery_id=other.pk) == "PENDING"
    other.refresh_from_db()
    assert other.error.startswith("ValueError: ")


def _taken_from_the_broker(queue, count):
    """The next `count` messages of `queue`, read as a worker would and acknowledged; the queue then removed."""
    from mlops_site.celery import app as celery_app

    with celery_app.connection_for_read() as connection:
        waiting = connection.SimpleQueue(queue)
        messages = [waiting.get(timeout=5) for _ in range(count)]
        for message in messages:
            message.ack()
        waiting.queue.delete()
        waiting.close()
    return messages


def test_a_delivery_is_queued_for_the_worker_with_its_countdown_and_queue():
    """What a worker receives: the delivery task for each id, on the queue asked for, not before its countdown."""
    import time

    queue = f"webhooks-test-{uuid.uuid4().hex[:8]}"
    before = time.time()
    _enqueue([41, 42], countdown=120, queue=queue)
    messages = _taken_from_the_broker(queue, 2)
    assert [m.headers["task"] for m in messages] == ["governance.deliver_webhook"] * 2
    assert [m.decode()[0] for m in messages] == [[41], [42]]  # (args, kwargs, embed)
    for message in messages:
        eta = datetime.fromisoformat(message.headers["eta"]).timestamp()
        assert before + 119 <= eta <= time.time() + 121
    immediate = f"{queue}-now"
    _enqueue([43], queue=immediate)
    (message,) = _taken_from_the_broker(immediate, 1)
    assert message.headers["eta"] is None


@pytest.mark.django_db(transaction=True)
def test_an_event_is_emitted_only_inside_the_transaction_of_its_change(owner):
    _subscribe("http://127.0.0.1:9/", owner)
    with pytest.raises(
        RuntimeError, match=r"^webhook_event_emit must run inside the transaction of the change it announces\.$"
    ):
        webhook_event_emit(event=EVENT, data={})
    assert not WebhookDelivery.objects.exists()


def test_disabled_subscriptions_and_other_events_get_no_delivery(owner):
    wanted = _subscribe("http://127.0.0.1:9/a", owner)
    _subscribe("http://127.0.0.1:9/b", owner, events=[WebhookSubscription.Event.ROLLBACK], name="rollbacks")
    off = _subscribe("http://127.0.0.1:9/c", owner, name="off")
    WebhookSubscription.objects.filter(pk=off.pk).update(enabled=False)
    with transaction.atomic():
        deliveries = webhook_event_emit(event=EVENT, data={"when": "now"})
    assert [d.subscription_id for d in deliveries] == [wanted.pk]
    (delivery,) = deliveries
    delivery.refresh_from_db()
    assert (delivery.event, delivery.status, delivery.attempts) == ("version.registered", "PENDING", 0)
    assert delivery.payload["data"] == {"when": "now"}


def _snapshot(subscription, secret=SECRET):
    return {
        "name": subscription.name,
        "url": subscription.url,
        "events": subscription.events,
        "enabled": subscription.enabled,
        "secret_sha256": hashlib.sha256(secret.encode()).hexdigest()[:12],
    }


def test_saving_a_subscription_is_audited_without_its_secret(owner):
    subscription = _subscribe("http://127.0.0.1:9/hook", owner)
    created = AuditEntry.objects.get(action="webhook.created")
    assert created.actor_name == "hook-owner"
    assert (created.object_type, created.object_id) == ("governance.webhooksubscription", str(subscription.pk))
    assert created.before is None
    assert created.after == {
        "name": "ci",
        "url": "http://127.0.0.1:9/hook",
        "events": ["version.registered"],
        "enabled": True,
        "secret_sha256": hashlib.sha256(SECRET.encode()).hexdigest()[:12],
    }
    assert SECRET not in json.dumps([created.before, created.after])

    subscription.url = "http://127.0.0.1:9/moved"
    subscription.secret = "another-secret"
    subscription.enabled = False
    webhook_subscription_save(subscription=subscription, by=owner)
    updated = AuditEntry.objects.get(action="webhook.updated")
    assert updated.before == {**_snapshot(subscription), "url": "http://127.0.0.1:9/hook", "enabled": True}
    assert updated.after == _snapshot(subscription, secret="another-secret")
    assert WebhookSubscription.objects.get(pk=subscription.pk).url == "http://127.0.0.1:9/moved"


def test_a_subscription_is_validated_and_saved_only_by_who_may(owner, auditor, engineer):
    with pytest.raises(ValidationError) as refused:
        _subscribe("http://127.0.0.1:9/", owner, events=["no.such.event"])
    assert "events" in refused.value.message_dict
    with pytest.raises(ValidationError):
        _subscribe("not a url", owner)
    assert not WebhookSubscription.objects.exists()
    assert not AuditEntry.objects.filter(action__startswith="webhook.").exists()

    with pytest.raises(NotPermitted, match="audrey may not create webhook subscriptions"):
        _subscribe("http://127.0.0.1:9/", auditor)
    subscription = _subscribe("http://127.0.0.1:9/", engineer)
    subscription.name = "renamed"
    with pytest.raises(NotPermitted, match="audrey may not edit webhook subscriptions"):
        webhook_subscription_save(subscription=subscription, by=auditor)
    assert WebhookSubscription.objects.get(pk=subscription.pk).name == "ci"


def test_a_body_that_is_not_utf8_is_kept_with_replacement_characters(receiver, owner, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 5
    receiver["state"].update(status=200, body=b"ok \xff\xfe")
    delivery = _delivery(receiver["url"], owner)
    assert webhook_deliver(delivery_id=delivery.pk) == "DELIVERED"
    delivery.refresh_from_db()
    assert delivery.response_body == "ok \ufffd\ufffd"
    receiver["state"].update(status=500, body=b"down \xff")
    other = WebhookDelivery.objects.create(subscription=delivery.subscription, event=EVENT, payload={})
    assert webhook_deliver(delivery_id=other.pk) == "PENDING"
    other.refresh_from_db()
    assert (other.response_status, other.response_body) == (500, "down \ufffd")


def test_a_3xx_answer_is_not_a_delivery(receiver, owner, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 5
    receiver["state"].update(status=300, body=b"choose")
    delivery = _delivery(receiver["url"], owner)
    assert webhook_deliver(delivery_id=delivery.pk) == "PENDING"
    delivery.refresh_from_db()
    assert (delivery.response_status, delivery.error, delivery.delivered_at) == (300, "HTTP 300", None)


def test_deliveries_are_queued_when_the_change_commits_on_the_queue_asked_for(
    owner, django_capture_on_commit_callbacks
):
    """Sent after commit, on the event's own queue (alerts go on `alerts`): read back from the broker."""

    queue = f"webhooks-test-{uuid.uuid4().hex[:8]}"
    _subscribe("http://127.0.0.1:9/", owner)
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        (delivery,) = webhook_event_emit(event=EVENT, data={}, queue=queue)
    (message,) = _taken_from_the_broker(queue, 1)
    assert message.headers["task"] == "governance.deliver_webhook"
    assert message.decode()[0] == [delivery.pk]


def test_creating_and_editing_a_subscription_need_their_own_permissions(owner, engineer, django_user_model):
    adder = user_with_permission(django_user_model, "adder", "add_webhooksubscription")
    changer = user_with_permission(django_user_model, "changer", "change_webhooksubscription")
    with pytest.raises(NotPermitted, match="changer may not create webhook subscriptions"):
        _subscribe("http://127.0.0.1:9/", changer)
    subscription = _subscribe("http://127.0.0.1:9/", adder)
    subscription.name = "by-adder"
    with pytest.raises(NotPermitted, match="adder may not edit webhook subscriptions"):
        webhook_subscription_save(subscription=subscription, by=adder)
    subscription.name = "by-changer"
    webhook_subscription_save(subscription=subscription, by=changer)
    subscription.name = "by-engineer"
    webhook_subscription_save(subscription=subscription, by=engineer)  # the ML engineer's role holds both
    assert WebhookSubscription.objects.get(pk=subscription.pk).name == "by-engineer"


def test_stalled_deliveries_are_queued_again_500_at_a_time(owner):
    from datetime import timedelta

    from django.utils import timezone

    from governance.services.webhooks import webhooks_retry_stalled

    subscription = _subscribe("http://127.0.0.1:9/", owner)
    WebhookDelivery.objects.bulk_create(
        WebhookDelivery(subscription=subscription, event=EVENT, payload={}) for _ in range(501)
    )
    WebhookDelivery.objects.update(created_at=timezone.now() - timedelta(minutes=5))
    assert webhooks_retry_stalled() == 500

    from mlops_site.celery import app as celery_app

    with celery_app.connection_for_write() as connection:  # no worker should ever try these
        connection.default_channel.queue_purge("default")
