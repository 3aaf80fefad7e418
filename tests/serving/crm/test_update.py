"""One customer's segment on request: POST /crm_segment_update?customer_id=... and
POST /api/v1/crm/customers/{id}/segment, through the same serving path as any prediction."""

import pytest

from governance.models import AuditEntry
from serving.crm.models import Customer, SegmentChange
from serving.models import PredictionLog
from tests.serving.crm.helpers import ROW, churn_version_register, crm_user, updates_counted

pytestmark = pytest.mark.django_db


@pytest.fixture
def cust_007(db):
    return Customer.objects.create(customer_id="CUST_TEST_007", features=dict(ROW))


def test_the_specification_form_updates_the_segment_and_says_everything(churn, cust_007, crm_api):
    before = updates_counted("updated", segment="at_risk")
    response = crm_api.post("/crm_segment_update?customer_id=CUST_TEST_007")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["customer_id"] == "CUST_TEST_007"
    assert body["features"] == ROW
    assert (body["model"], body["version"], body["deployment"]) == ("churn", 1, "primary")
    prediction = body["prediction"]
    assert set(prediction["probabilities"]) == {"no", "yes"}
    assert prediction["confidence"] == max(prediction["probabilities"].values())
    # This customer is a textbook churner: the default mapping puts P(yes) >= 0.6 in at_risk.
    assert prediction["probabilities"]["yes"] >= 0.6
    assert (body["segment_before"], body["segment_after"], body["status"]) == ("", "at_risk", "updated")
    assert body["request_id"] == response["X-Request-ID"]

    cust_007.refresh_from_db()
    assert (cust_007.segment, cust_007.segment_model, cust_007.segment_version) == ("at_risk", "churn", 1)
    assert cust_007.segment_request_id == body["request_id"]
    assert cust_007.segment_set_by == "cora"
    change = SegmentChange.objects.get(customer_id="CUST_TEST_007")
    assert (change.segment_before, change.segment_after, change.status) == ("", "at_risk", "applied")
    assert (change.request_id, change.row, change.actor_name) == (body["request_id"], 0, "cora")
    # The same prediction log row as any other prediction, under the same request id.
    logged = PredictionLog.objects.get(request_id=body["request_id"])
    assert (logged.model_name, logged.version, logged.deployment_mode) == ("churn", 1, "primary")
    assert logged.inputs == ROW
    entry = AuditEntry.objects.get(action="crm.segment_updated")
    assert (entry.actor_name, entry.before, entry.after["segment"]) == ("cora", {"segment": ""}, "at_risk")
    assert entry.request_id == body["request_id"]
    assert updates_counted("updated", segment="at_risk") == before + 1


def test_the_api_form_is_the_same_update_and_an_unchanged_segment_is_not_written(churn, cust_007, crm_api):
    first = crm_api.post("/api/v1/crm/customers/CUST_TEST_007/segment")
    assert first.json()["status"] == "updated"
    before = updates_counted("unchanged", segment="at_risk")
    again = crm_api.post("/api/v1/crm/customers/CUST_TEST_007/segment")
    assert again.status_code == 200
    assert (again.json()["segment_before"], again.json()["segment_after"]) == ("at_risk", "at_risk")
    assert again.json()["status"] == "unchanged"
    assert SegmentChange.objects.count() == 1
    assert updates_counted("unchanged", segment="at_risk") == before + 1
    detail = crm_api.get("/api/v1/crm/customers/CUST_TEST_007").json()
    assert detail["segment"] == "at_risk"
    assert [h["segment_after"] for h in detail["history"]] == ["at_risk"]


def test_the_log_ties_lookup_prediction_and_write_by_request_id(churn, cust_007, crm_api, caplog):
    caplog.set_level("INFO", logger="serving.crm")
    request_id = crm_api.post("/crm_segment_update?customer_id=CUST_TEST_007").json()["request_id"]
    lines = [r.getMessage() for r in caplog.records if r.name == "serving.crm"]
    assert [line.split()[2] for line in lines] == ["lookup", "predicted", "write"]
    assert all(line.startswith(f"crm {request_id} ") for line in lines)


def test_a_canary_answers_its_share_of_crm_updates_too(churn, cust_007, crm_api, scientist, put_on_traffic):
    v2 = churn_version_register(by=scientist, n_estimators=12, seed=5)
    put_on_traffic(v2, percent=100, reason="try v2")
    from serving.signal import signal_bump

    signal_bump()
    body = crm_api.post("/crm_segment_update?customer_id=CUST_TEST_007").json()
    assert (body["version"], body["deployment"]) == (2, "canary")
    assert SegmentChange.objects.get().deployment_mode == "canary"
    assert PredictionLog.objects.get(request_id=body["request_id"]).deployment_mode == "canary"


def test_unknown_customer_is_a_404_naming_it(churn, crm_api):
    response = crm_api.post("/crm_segment_update?customer_id=CUST_NOBODY")
    assert response.status_code == 404
    assert response.json() == {"error": "customer 'CUST_NOBODY' does not exist in the CRM", "field": "customer_id"}


def test_no_customer_id_is_a_400(churn, crm_api):
    response = crm_api.post("/crm_segment_update")
    assert response.status_code == 400
    assert response.json()["field"] == "customer_id"


BAD_RECORDS = [
    ({k: v for k, v in ROW.items() if k != "age"}, "features.age", "has no 'age'"),
    ({**ROW, "age": None}, "features.age", "has no 'age'"),
    ({**ROW, "age": "forty"}, "features.age", "expects a number, got text 'forty'"),
    ({**ROW, "tenure_months": True}, "features.tenure_months", "expects a number"),
    ({**ROW, "monthly_charges": 1e300}, "features.monthly_charges", "out of range"),
    ({**ROW, "contract_type": ["two_year"]}, "features.contract_type", "expects text"),
    (["not", "an", "object"], "features", "not an object"),
]


@pytest.mark.parametrize(("features", "field", "message"), BAD_RECORDS)
def test_a_record_lacking_a_feature_or_with_a_wrong_type_is_a_422_and_nothing_is_written(
    churn, crm_api, features, field, message
):
    Customer.objects.create(customer_id="CUST_BAD", features=features, segment="loyal")
    before = updates_counted("failed", segment="", version="")
    response = crm_api.post("/api/v1/crm/customers/CUST_BAD/segment")
    assert response.status_code == 422, response.json()
    assert response.json()["field"] == field
    assert message in response.json()["error"]
    assert "CUST_BAD" in response.json()["error"]
    assert Customer.objects.get(customer_id="CUST_BAD").segment == "loyal"
    assert not SegmentChange.objects.exists()
    assert updates_counted("failed", segment="", version="") == before + 1


def test_no_model_in_production_is_a_409_saying_so(cust_007, crm_api, scientist):
    response = crm_api.post("/crm_segment_update?customer_id=CUST_TEST_007")
    assert response.status_code == 409
    assert response.json()["error"].startswith("model 'churn' has no version in Production")
    churn_version_register(by=scientist)  # registered, never promoted
    assert crm_api.post("/crm_segment_update?customer_id=CUST_TEST_007").status_code == 409
    assert Customer.objects.get(customer_id="CUST_TEST_007").segment == ""
    assert not SegmentChange.objects.exists()


def test_it_needs_the_update_segment_permission(churn, cust_007, client, django_user_model):
    reader = crm_user(django_user_model, "reader", "view_customer")
    client.force_login(reader)
    response = client.post("/crm_segment_update?customer_id=CUST_TEST_007")
    assert response.status_code == 403
    assert (
        response.json()["error"] == "reader may not update a customer's segment: it needs the update_segment permission"
    )
    assert client.get("/api/v1/crm/customers/CUST_TEST_007").status_code == 200
    client.logout()
    assert client.post("/crm_segment_update?customer_id=CUST_TEST_007").status_code == 401


def test_metrics_endpoint_counts_crm_updates(churn, cust_007, crm_api, client):
    crm_api.post("/crm_segment_update?customer_id=CUST_TEST_007")
    text = client.get("/metrics").content.decode()
    line = next(
        line
        for line in text.splitlines()
        if line.startswith("crm_segment_updates_total{") and 'status="updated"' in line and 'segment="at_risk"' in line
    )
    assert 'model="churn"' in line
    assert 'model_version="1"' in line
    assert float(line.rsplit(" ", 1)[1]) >= 1
