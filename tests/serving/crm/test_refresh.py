"""Every customer's segment: refresh jobs in chunks predicted as batches, writing only what changed,
stopped, resumed, taken over, and never writing a segment twice for one prediction."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from core.errors import Conflict
from governance.models import AuditEntry
from serving.crm import services
from serving.crm.models import CrmRefresh, Customer, SegmentChange
from serving.crm.services import refresh as refresh_module
from serving.models import PredictionLog
from tests.helpers import dispatches
from tests.serving.crm.helpers import ROW, churn_promote, churn_version_register, crm_user, updates_counted

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def small_chunks(settings):
    settings.CRM_BATCH_SIZE = 7  # 30 customers: five chunks


def _segments():
    return dict(Customer.objects.values_list("customer_id", "segment"))


def _start(by, scope="all", **kwargs):
    return services.crm_refresh_start(scope=scope, by=by, inline=True, **kwargs)


def test_a_refresh_predicts_each_chunk_as_one_batch_and_writes_only_what_changed(churn, customers, operator):
    before = sum(updates_counted("updated", segment=s) for s in ("at_risk", "watch", "loyal"))
    refresh = _start(operator)
    assert refresh.status == "finished", refresh.error
    assert (refresh.total, refresh.processed, refresh.failed) == (30, 30, 0)
    segments = _segments()
    assert all(segments.values())
    assert refresh.updated == 30
    assert refresh.unchanged == 0
    assert SegmentChange.objects.filter(refresh=refresh, status="applied").count() == 30
    # One prediction request per chunk, all through the prediction log.
    request_ids = set(PredictionLog.objects.filter(model_name="churn").values_list("request_id", flat=True))
    assert len(request_ids) == 5
    assert PredictionLog.objects.filter(model_name="churn").count() == 30
    change = SegmentChange.objects.filter(refresh=refresh).first()
    logged = PredictionLog.objects.get(request_id=change.request_id, row=change.row)
    assert (
        logged.inputs["tenure_months"] == Customer.objects.get(customer_id=change.customer_id).features["tenure_months"]
    )
    assert str(logged.prediction) == change.prediction
    assert sum(updates_counted("updated", segment=s) for s in ("at_risk", "watch", "loyal")) == before + 30
    assert [e.action for e in AuditEntry.objects.filter(object_type="serving.crmrefresh").order_by("id")] == [
        "crm.refresh_started",
        "crm.refresh_ended",
    ]

    again = _start(operator)
    assert (again.updated, again.unchanged) == (0, 30)
    assert SegmentChange.objects.count() == 30  # nothing written when nothing changed


def test_changed_scope_reads_only_customers_changed_since_the_last_refresh(churn, customers, operator):
    first = _start(operator, scope="changed")
    assert (first.scope, first.scope_note) == ("all", "every customer: no refresh finished before")
    quiet = _start(operator, scope="changed")
    assert (quiet.scope, quiet.total, quiet.processed) == ("changed", 0, 0)
    assert quiet.scope_note == f"customers changed since refresh #{first.pk} started"
    moved = ["CUST_00003", "CUST_00011"]
    for customer in Customer.objects.filter(customer_id__in=moved):
        customer.features = {
            **customer.features,
            "tenure_months": 1,
            "support_calls": 9,
            "contract_type": "month_to_month",
        }
        customer.features_updated_at = timezone.now()
        customer.save()
    changed = _start(operator, scope="changed")
    assert (changed.total, changed.processed, changed.updated + changed.unchanged) == (2, 2, 2)
    assert set(SegmentChange.objects.filter(refresh=changed).values_list("customer_id", flat=True)) <= set(moved)


def test_a_new_production_version_makes_every_customer_due(churn, customers, operator, scientist, approver, settings):
    _start(operator)
    churn_promote(churn_version_register(by=scientist, seed=3), scientist=scientist, approver=approver)
    from serving.signal import signal_bump

    signal_bump()
    refresh = _start(operator, scope="changed")
    assert refresh.scope == "all"
    assert refresh.scope_note == "every customer: churn v2 replaced v1"
    assert refresh.processed == 30
    assert set(SegmentChange.objects.filter(refresh=refresh).values_list("model_version", flat=True)) <= {2}


def test_bad_records_are_counted_named_and_skipped(churn, customers, operator):
    Customer.objects.filter(customer_id="CUST_00004").update(features={**ROW, "age": "old"})
    Customer.objects.filter(customer_id="CUST_00009").update(features={k: v for k, v in ROW.items() if k != "age"})
    refresh = _start(operator)
    assert (refresh.processed, refresh.updated, refresh.failed) == (30, 28, 2)
    assert refresh.failures == [
        {
            "customer_id": "CUST_00004",
            "error": "features.age: customer CUST_00004: age expects a number, got text 'old'",
        },
        {
            "customer_id": "CUST_00009",
            "error": "features.age: customer CUST_00009 has no 'age' in the CRM, and churn needs it",
        },
    ]
    assert _segments()["CUST_00004"] == ""


class WorkerLost(BaseException):
    """What a killed worker looks like from inside: nothing after it runs."""


def test_a_refresh_that_dies_midway_resumes_where_it_stopped_and_writes_each_segment_once(
    churn, customers, operator, monkeypatch
):
    real = refresh_module.columns_predict
    calls = []

    def dies_on_the_third_chunk(**kwargs):
        calls.append(kwargs["request_id"])
        if len(calls) == 3:
            raise WorkerLost
        return real(**kwargs)

    monkeypatch.setattr(refresh_module, "columns_predict", dies_on_the_third_chunk)
    with pytest.raises(WorkerLost):
        _start(operator)
    refresh = CrmRefresh.objects.get()
    assert (refresh.status, refresh.processed, refresh.cursor) == ("running", 14, "CUST_00014")
    assert SegmentChange.objects.count() == 14

    done = services.crm_refresh_execute(refresh_id=refresh.pk)  # the broker hands the task to another worker
    assert (done.status, done.processed, done.updated, done.attempts) == ("finished", 30, 30, 2)
    assert all(_segments().values())
    per_customer = SegmentChange.objects.values_list("customer_id", flat=True)
    assert sorted(per_customer) == sorted(set(per_customer))  # never twice


def test_a_second_attempt_takes_over_and_the_first_writes_nothing_more(churn, customers, operator):
    def another_worker_claims_it(refresh):
        if refresh.processed == 7:
            refresh_module._refresh_claim(refresh.pk)

    refresh = services.crm_refresh_start(scope="all", by=operator, inline=True, on_progress=another_worker_claims_it)
    assert (refresh.status, refresh.processed) == ("running", 7)  # the first attempt stopped at its next chunk
    assert SegmentChange.objects.count() == 7  # that chunk's writes were rolled back
    done = services.crm_refresh_execute(refresh_id=refresh.pk)
    assert (done.status, done.processed, done.updated) == ("finished", 30, 30)
    assert SegmentChange.objects.count() == 30


def test_stop_after_a_chunk_then_resume_from_there(churn, customers, operator):
    def stop_after_the_first_chunk(refresh):
        if refresh.processed == 7:
            services.crm_refresh_stop(refresh_id=refresh.pk, by=operator, reason="quiet hours")

    refresh = _start(operator, on_progress=stop_after_the_first_chunk)
    assert (refresh.status, refresh.processed, refresh.cursor) == ("stopped", 7, "CUST_00007")
    resumed = services.crm_refresh_resume(refresh_id=refresh.pk, by=operator, inline=True)
    assert (resumed.status, resumed.processed, resumed.updated) == ("finished", 30, 30)
    assert SegmentChange.objects.count() == 30
    actions = list(
        AuditEntry.objects.filter(object_type="serving.crmrefresh").order_by("id").values_list("action", flat=True)
    )
    assert actions == [
        "crm.refresh_started",
        "crm.refresh_stop_requested",
        "crm.refresh_ended",
        "crm.refresh_resumed",
        "crm.refresh_ended",
    ]
    with pytest.raises(Conflict):
        services.crm_refresh_resume(refresh_id=refresh.pk, by=operator)


def test_the_api_starts_stops_and_resumes_one_refresh_at_a_time(
    churn, customers, crm_api, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = crm_api.post("/api/v1/crm/refreshes", {"scope": "all"}, format="json")
    assert response.status_code == 202, response.json()
    assert len(dispatches(queued)) == 1  # the task is sent once the transaction commits
    refresh_id = response.json()["id"]
    assert response.json()["status"] == "queued"
    second = crm_api.post("/api/v1/crm/refreshes", {"scope": "all"}, format="json")
    assert second.status_code == 409
    assert f"refresh #{refresh_id}" in second.json()["error"]
    stopped = crm_api.post(f"/api/v1/crm/refreshes/{refresh_id}/stop", {"reason": "not now"}, format="json")
    assert stopped.json()["status"] == "stopped"
    with django_capture_on_commit_callbacks(execute=False):
        resumed = crm_api.post(f"/api/v1/crm/refreshes/{refresh_id}/resume")
    assert (resumed.status_code, resumed.json()["status"]) == (202, "queued")
    services.crm_refresh_execute(refresh_id=refresh_id)
    detail = crm_api.get(f"/api/v1/crm/refreshes/{refresh_id}").json()
    assert (detail["status"], detail["processed"], detail["progress"]) == ("finished", 30, 1.0)
    assert crm_api.get("/api/v1/crm/refreshes").json()[0]["id"] == refresh_id
    assert crm_api.post("/api/v1/crm/refreshes", {"scope": "sometimes"}, format="json").json()["field"] == "scope"


def test_refreshes_need_the_permission_and_a_model_in_production(customers, operator, django_user_model, client):
    with pytest.raises(Conflict) as refused:
        _start(operator)
    assert "has no version in Production" in str(refused.value)
    reader = crm_user(django_user_model, "reader", "view_crmrefresh")
    client.force_login(reader)
    response = client.post("/api/v1/crm/refreshes", {"scope": "all"}, content_type="application/json")
    assert response.status_code == 403
    assert "refresh_segments" in response.json()["error"]


def test_the_scheduled_refresh_acts_as_the_system_and_resumes_a_lost_one(
    churn, customers, settings, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        refresh = services.crm_refresh_scheduled()
    assert (refresh.actor_name, refresh.started_by, refresh.status) == ("crm-refresh", None, "queued")
    assert AuditEntry.objects.get(action="crm.refresh_started").actor_name == "crm-refresh"
    assert services.crm_refresh_scheduled() is None  # one is queued and alive
    CrmRefresh.objects.filter(pk=refresh.pk).update(
        status="running", heartbeat_at=timezone.now() - timedelta(seconds=settings.CRM_REFRESH_HEARTBEAT_TIMEOUT + 1)
    )
    with django_capture_on_commit_callbacks(execute=False):
        resumed = services.crm_refresh_scheduled()
    assert (resumed.pk, resumed.status) == (refresh.pk, "queued")
    assert AuditEntry.objects.filter(action="crm.refresh_resumed", actor_name="crm-refresh").exists()


def test_crm_refresh_command_draws_a_bar_and_prints_the_id_last(churn, customers, operator):
    out, err = StringIO(), StringIO()
    call_command("crm_refresh", "--all", "--user", "cora", stdout=out, stderr=err)
    lines = out.getvalue().splitlines()
    refresh = CrmRefresh.objects.get()
    assert lines[-1] == str(refresh.pk)
    assert "30 customers: 30 updated, 0 unchanged, 0 failed" in out.getvalue()
    assert "30/30" in err.getvalue()
    out = StringIO()
    call_command("crm_refresh", "--queue", "--user", "cora", stdout=out)
    queued = CrmRefresh.objects.order_by("-id").first()
    assert f"Refresh #{queued.pk} is queued" in out.getvalue()
    with pytest.raises(CommandError, match="is already queued"):
        call_command("crm_refresh", "--user", "cora", stdout=StringIO())
    with pytest.raises(CommandError, match="--user"):
        call_command("crm_refresh", stdout=StringIO())
