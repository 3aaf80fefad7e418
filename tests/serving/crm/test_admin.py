"""The CRM in the admin: customers with their segment and history, "Update segment now", the segment
changes per day, refreshes started / stopped / resumed with their progress, and the settings."""

import pytest
from django.urls import reverse

from governance.models import AuditEntry
from serving.crm import services
from serving.crm.models import CrmRefresh, CrmSettings, Customer, SegmentChange
from tests.helpers import dispatches
from tests.serving.crm.helpers import ROW

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, operator):
    client.force_login(operator)
    return client


def test_update_segment_now_writes_the_segment_and_the_page_shows_its_history(churn, admin_client):
    Customer.objects.create(customer_id="CUST_TEST_007", features=dict(ROW))
    Customer.objects.create(customer_id="CUST_BAD", features={**ROW, "age": "n/a"})
    changelist = reverse("admin:serving_customer_changelist")
    ids = list(Customer.objects.order_by("customer_id").values_list("pk", flat=True))
    response = admin_client.post(changelist, {"action": "update_segment_now", "_selected_action": ids}, follow=True)
    page = response.content.decode()
    assert "Updated: CUST_TEST_007 – → at_risk." in page
    assert "CUST_BAD: features.age: customer CUST_BAD: age expects a number" in page
    customer = Customer.objects.get(customer_id="CUST_TEST_007")
    assert (customer.segment, customer.segment_version, customer.segment_set_by) == ("at_risk", 1, "cora")
    listing = admin_client.get(changelist).content.decode()
    assert "at_risk" in listing
    assert "churn v1" in listing
    detail = admin_client.get(reverse("admin:serving_customer_change", args=[customer.pk])).content.decode()
    change = SegmentChange.objects.get()
    assert "– → at_risk" in detail
    assert change.request_id[:12] in detail
    assert "every change of this customer" in detail
    history = admin_client.get(reverse("admin:serving_segmentchange_changelist") + "?customer_id=CUST_TEST_007")
    text = history.content.decode()
    assert "Segment changes per day" in text
    assert "CUST_TEST_007" in text


def test_the_action_needs_the_permission(churn, client, django_user_model):
    from tests.serving.crm.helpers import crm_user

    client.force_login(crm_user(django_user_model, "viewer", "view_customer"))
    page = client.get(reverse("admin:serving_customer_changelist")).content.decode()
    assert "update_segment_now" not in page


def test_start_a_refresh_watch_it_stop_and_resume_in_the_admin(
    churn, customers, admin_client, django_capture_on_commit_callbacks, settings
):
    changelist = reverse("admin:serving_crmrefresh_changelist")
    assert "Refresh segments" in admin_client.get(changelist).content.decode()
    start = reverse("admin:serving_crmrefresh_start")
    assert admin_client.get(start).status_code == 200
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = admin_client.post(start, {"scope": "changed"})
    assert response.status_code == 302
    assert len(dispatches(queued)) == 1
    refresh = CrmRefresh.objects.get()
    page = admin_client.get(changelist).content.decode()
    assert 'http-equiv="refresh"' in page  # the list refreshes itself while a refresh is active
    assert "0 / ?" in page
    admin_client.post(changelist, {"action": "stop", "_selected_action": [refresh.pk]})
    refresh.refresh_from_db()
    assert refresh.status == "stopped"
    with django_capture_on_commit_callbacks(execute=False) as queued:
        admin_client.post(changelist, {"action": "resume", "_selected_action": [refresh.pk]})
    assert len(dispatches(queued)) == 1
    settings.CRM_BATCH_SIZE = 10
    services.crm_refresh_execute(refresh_id=refresh.pk)
    detail = admin_client.get(reverse("admin:serving_crmrefresh_change", args=[refresh.pk])).content.decode()
    assert "30 / 30" in detail
    assert "the 30 changes of this refresh" in detail
    assert 'http-equiv="refresh"' not in detail
    per_day = admin_client.get(reverse("admin:serving_segmentchange_changelist")).content.decode()
    assert "Segment changes per day" in per_day
    assert "<b>30</b>" in per_day


def test_settings_in_the_admin_refuse_a_class_the_model_lacks(churn, admin_client):
    url = reverse("admin:serving_crmsettings_changelist")
    response = admin_client.get(url)
    assert response.status_code == 302
    change = response["Location"]
    bad = admin_client.post(
        change, {"model_name": "churn", "mapping": '{"rules": [{"segment": "x", "class": "maybe"}]}'}
    )
    assert bad.status_code == 200
    assert "churn has no class &#x27;maybe&#x27;" in bad.content.decode()
    good = '{"rules": [{"segment": "stay", "class": "no"}, {"segment": "go", "class": "yes"}]}'
    response = admin_client.post(change, {"model_name": "churn", "mapping": good, "reason": "by class"})
    assert response.status_code == 302
    assert CrmSettings.objects.get().mapping["rules"][0]["segment"] == "stay"
    entry = AuditEntry.objects.get(action="crm.settings_updated")
    assert (entry.actor_name, entry.reason) == ("cora", "by class")
