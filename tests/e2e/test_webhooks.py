"""Webhooks through a real worker: sent once the change commits, retried after real countdowns."""

import json
import time

import pytest
from django.contrib.auth import get_user_model

from governance.models import WebhookDelivery, WebhookSubscription
from governance.services import webhook_subscription_save
from tests.e2e import processes

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def worker_env():
    return {"WEBHOOK_RETRY_BASE_SECONDS": "1", "WEBHOOK_MAX_ATTEMPTS": "5"}


def test_a_committed_change_is_delivered_by_the_worker_retrying_with_growing_waits(worker, receiver, register):
    root = get_user_model().objects.create_superuser("hooks", password="pw-hooks-1")
    webhook_subscription_save(
        subscription=WebhookSubscription(name="gitops", url=receiver["url"], secret="s", events=["version.registered"]),
        by=root,
    )
    receiver["state"]["fail_first"] = 2
    register()  # commits: the delivery is queued on commit, no one calls the task by hand
    processes.wait_for(lambda: len(receiver["received"]) >= 3, timeout=60, process=worker, what="three attempts")
    delivery = processes.wait_for(
        lambda: WebhookDelivery.objects.filter(status="DELIVERED").first(), timeout=30, process=worker, what="delivered"
    )
    assert delivery.attempts == 3
    first, second, third = (request["at"] for request in receiver["received"][:3])
    # 1 s after the first failure, then 2 s after the second (WEBHOOK_RETRY_BASE_SECONDS × 2^(attempt-1)).
    assert 0.9 <= second - first < 4
    assert 1.9 <= third - second < 6
    assert json.loads(receiver["received"][2]["body"])["event"] == "version.registered"
    time.sleep(0.5)
    assert len(receiver["received"]) == 3  # delivered once it succeeded, not again
