"""Fixtures of the registry's tests."""

import pytest


@pytest.fixture
def hooks(django_user_model):
    """A subscription to every event, made through the service; returns the payloads emitted since, by event."""
    from governance.models import WebhookDelivery, WebhookSubscription
    from governance.services import webhook_subscription_save

    admin = django_user_model.objects.create_superuser("hooks", password="pw-hooks-1")
    webhook_subscription_save(
        subscription=WebhookSubscription(name="all", url="http://127.0.0.1:9/", secret="s" * 32, events=[]), by=admin
    )

    def emitted(event):
        return [d.payload["data"] for d in WebhookDelivery.objects.filter(event=event).order_by("id")]

    return emitted
