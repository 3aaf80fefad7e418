"""Webhook delivery to a real HTTP server on loopback, with its signature checked as a receiver would."""

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from governance.models import WebhookDelivery, WebhookSubscription
from governance.services import webhook_deliver
from governance.tasks import deliver_webhook

pytestmark = pytest.mark.django_db

SECRET = "s3cret-for-tests"


@pytest.fixture
def receiver():
    """An HTTP server that records each POST; `fail_first` answers that many requests with 503."""
    received = []
    state = {"fail_first": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"headers": dict(self.headers), "body": body})
            status = 503 if state["fail_first"] > 0 else 200
            state["fail_first"] -= 1
            self.send_response(status)
            self.end_headers()
            self.wfile.write(b"thanks" if status == 200 else b"busy")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"url": f"http://127.0.0.1:{server.server_port}/hook", "received": received, "state": state}
    server.shutdown()


def _subscribe(url, events=()):
    return WebhookSubscription.objects.create(name="gitops", url=url, secret=SECRET, events=list(events))


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
    assert payload["event"] == "version.registered"
    assert payload["data"]["model"] == "iris-clf"
    assert payload["data"]["version"] == 1
    stage = json.loads(receiver["received"][3]["body"])
    assert stage["data"]["stage"] == "Staging"
    assert stage["data"]["from_stage"] == "None"
    delivered = WebhookDelivery.objects.get(event="version.registered")
    assert (delivered.response_status, delivered.response_body, delivered.attempts) == (200, "thanks", 1)


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
