"""The HTTP connector against a CRM on the loopback that speaks the contract: success, 5xx then success,
an answer lost after the write, down, slow; and a refresh through it, rate-bounded and resumable."""

import socket
import time

import pytest

from serving.crm import services
from serving.crm.models import CrmRefresh, SegmentChange
from tests.serving.crm.helpers import LOYAL_ROW, ROW, updates_counted
from tests.serving.crm.loopback import LoopbackCrm

pytestmark = pytest.mark.django_db


@pytest.fixture
def crm(settings):
    customers = {"CUST_TEST_007": ROW, "CUST_TEST_008": LOYAL_ROW}
    customers.update({f"CUST_{i:05d}": {**ROW, "tenure_months": (i * 7) % 72} for i in range(1, 24)})
    with LoopbackCrm(customers) as server:
        settings.CRM_URL = server.url
        settings.CRM_TOKEN = "crm-secret"
        settings.CRM_RETRIES = 2
        settings.CRM_RETRY_BACKOFF_SECONDS = 0.01
        settings.CRM_TIMEOUT_SECONDS = 2.0
        settings.CRM_RATE_LIMIT = 0
        settings.CRM_HTTP_PAGE_SIZE = 10
        yield server


def test_an_update_reads_and_writes_the_crm_over_http(churn, crm, crm_api):
    response = crm_api.post("/crm_segment_update?customer_id=CUST_TEST_007")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["segment_before"], body["segment_after"], body["features"]) == ("", "at_risk", ROW)
    assert crm.customers["CUST_TEST_007"]["segment"] == "at_risk"
    assert [(m, p) for m, p, _ in crm.requests] == [
        ("GET", "/customers/CUST_TEST_007"),
        ("PUT", "/customers/CUST_TEST_007/segment"),
    ]
    key = crm.requests[1][2]
    assert key.startswith(body["request_id"] + ":")
    change = SegmentChange.objects.get()
    assert (change.status, change.idempotency_key) == ("applied", key)
    assert crm_api.get("/api/v1/crm/settings").json()["crm"] == "http"


def test_5xx_answers_are_retried_until_the_crm_answers(churn, crm, crm_api):
    crm.faults = [503, 500]
    response = crm_api.post("/crm_segment_update?customer_id=CUST_TEST_007")
    assert response.status_code == 200, response.json()
    assert crm.count("GET") == 3
    assert crm.customers["CUST_TEST_007"]["segment"] == "at_risk"


def test_a_write_whose_answer_was_lost_is_retried_with_its_key_and_applied_once(churn, crm, crm_api):
    crm.faults = [None, "lost"]  # the GET answers; the PUT is applied, then the answer is lost (502)
    response = crm_api.post("/crm_segment_update?customer_id=CUST_TEST_007")
    assert response.status_code == 200, response.json()
    puts = [key for method, _, key in crm.requests if method == "PUT"]
    assert len(puts) == 2
    assert puts[0] == puts[1]
    assert crm.writes["CUST_TEST_007"] == 1


def test_a_crm_failing_every_write_is_a_503_and_the_segment_stays(churn, crm, crm_api):
    crm.faults = [None, 500, 500, 500]
    before = updates_counted("failed", segment="at_risk")
    response = crm_api.post("/crm_segment_update?customer_id=CUST_TEST_007")
    assert response.status_code == 503
    assert response.json()["error"].startswith(f"the CRM at {crm.url} is unreachable: answered 500")
    assert "after 3 attempts" in response.json()["error"]
    assert crm.customers["CUST_TEST_007"]["segment"] == ""
    change = SegmentChange.objects.get()
    assert change.status == "failed"
    assert "answered 500" in change.error
    assert updates_counted("failed", segment="at_risk") == before + 1


def test_a_crm_that_is_down_is_a_503_with_the_reason(churn, crm_api, settings):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket closes
    settings.CRM_URL = f"http://127.0.0.1:{port}"
    settings.CRM_RETRIES, settings.CRM_RETRY_BACKOFF_SECONDS = 1, 0.01
    before = updates_counted("failed", segment="", version="")
    response = crm_api.post("/crm_segment_update?customer_id=CUST_TEST_007")
    assert response.status_code == 503
    assert "unreachable: ConnectError" in response.json()["error"]
    assert not SegmentChange.objects.exists()
    assert updates_counted("failed", segment="", version="") == before + 1


def test_a_slow_crm_times_out_within_the_budget(churn, crm, crm_api, settings):
    settings.CRM_TIMEOUT_SECONDS, settings.CRM_RETRIES = 0.2, 1
    crm.delay = 1.5
    started = time.monotonic()
    response = crm_api.post("/crm_segment_update?customer_id=CUST_TEST_007")
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert "timed out" in response.json()["error"]
    assert elapsed < 1.5  # two attempts of 0.2 s, not the CRM's 1.5 s
    crm.delay = 0
    assert crm_api.post("/crm_segment_update?customer_id=CUST_TEST_007").status_code == 200


def test_unknown_customer_in_the_external_crm_is_a_404(churn, crm, crm_api):
    response = crm_api.post("/api/v1/crm/customers/CUST_GONE/segment")
    assert response.status_code == 404
    assert response.json()["error"] == "customer 'CUST_GONE' does not exist in the CRM"


def test_a_refresh_through_http_is_rate_bounded_and_writes_each_segment_once(churn, crm, operator, settings):
    settings.CRM_RATE_LIMIT = 40
    started = time.monotonic()
    refresh = services.crm_refresh_start(scope="all", by=operator, inline=True)
    elapsed = time.monotonic() - started
    assert refresh.status == "finished", refresh.error
    assert (refresh.total, refresh.processed, refresh.updated) == (25, 25, 25)
    assert all(c["segment"] for c in crm.customers.values())
    assert set(crm.writes.values()) == {1}
    calls = len(crm.requests)  # count + 3 pages + an empty one + 25 writes
    assert calls == 30
    assert elapsed >= (calls - 1) / 40  # at most 40 calls a second


def test_a_refresh_cut_off_by_a_crm_outage_resumes_and_sends_pending_writes_under_their_keys(churn, crm, operator):
    crm.outage_after_writes = 12  # in the second page: write 13 is applied but its answer lost, then 503s
    refresh = services.crm_refresh_start(scope="all", by=operator, inline=True)
    assert refresh.status == "failed"
    assert "unreachable" in refresh.error
    assert (refresh.processed, refresh.cursor) == (10, "CUST_00010")
    pending = SegmentChange.objects.filter(refresh=refresh, status="pending")
    assert pending.count() == 8  # the second page's writes from the one whose answer was lost
    lost_key = pending.order_by("id").first().idempotency_key

    crm.outage_after_writes = None
    resumed = services.crm_refresh_resume(refresh_id=refresh.pk, by=operator, inline=True)
    assert (resumed.status, resumed.processed, resumed.attempts) == ("finished", 25, 2)
    assert not SegmentChange.objects.filter(status="pending").exists()
    assert set(crm.writes.values()) == {1}  # the lost write was sent again under its key, not applied twice
    assert sum(1 for m, _, key in crm.requests if m == "PUT" and key == lost_key) >= 2
    assert all(c["segment"] for c in crm.customers.values())
    assert CrmRefresh.objects.get().failed == 0
