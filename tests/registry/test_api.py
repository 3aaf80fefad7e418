import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from governance.models import AuditEntry
from registry.models import ModelVersion

pytestmark = pytest.mark.django_db


def _client(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_register_request_approve_through_the_api(train, scientist, approver):
    run = train()
    ds, ap = _client(scientist), _client(approver)
    created = ds.post("/api/v1/models/churn-clf/versions", {"run_id": run.pk, "description": "first"}, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["version"] == 1
    assert created.json()["stage"] == "None"
    asked = ds.post(
        "/api/v1/models/churn-clf/versions/1/promotion-requests",
        {"to_stage": "production", "reason": "beats baseline"},
        format="json",
    )
    assert asked.status_code == 201
    body = asked.json()
    assert body["status"] == "PENDING"
    assert body["compliance"]["compliant"] is True
    own = ds.post(f"/api/v1/promotion-requests/{body['id']}/approve", {}, format="json")
    assert own.status_code == 403
    assert "approve_promotion" in own.json()["error"]
    approved = ap.post(f"/api/v1/promotion-requests/{body['id']}/approve", {"comment": "ok"}, format="json")
    assert approved.status_code == 200
    assert approved.json()["status"] == "APPROVED"
    again = ap.post(f"/api/v1/promotion-requests/{body['id']}/approve", {}, format="json")
    assert again.status_code == 409
    assert "already approved" in again.json()["error"]
    detail = ds.get("/api/v1/models/churn-clf/versions/1").json()
    assert detail["stage"] == "Production"
    assert detail["compliance"]["score"] == 100.0
    assert "features" in detail["reference_stats"]
    models = ds.get("/api/v1/models").json()
    assert models[0]["production_version"] == 1
    assert models[0]["version_count"] == 1


def test_api_refusals_name_the_problem(train, register, scientist, approver, auditor):
    ds = _client(scientist)
    assert ds.post("/api/v1/models/m/versions", {"run_id": 424242}, format="json").status_code == 404
    bad_name = ds.post("/api/v1/models/bad%20name/versions", {"run_id": train().pk}, format="json")
    assert bad_name.status_code == 400
    assert bad_name.json()["field"] == "name"
    assert ds.post("/api/v1/models/m/versions", {"run_id": "x"}, format="json").json()["field"] == "run_id"
    version = register(name="m")
    assert ds.get("/api/v1/models/m/versions/9").status_code == 404
    assert ds.get("/api/v1/models/nope").status_code == 404
    bad_stage = ds.post(
        "/api/v1/models/m/versions/1/promotion-requests", {"to_stage": "prod", "reason": "r"}, format="json"
    )
    assert bad_stage.status_code == 400
    assert bad_stage.json()["field"] == "to_stage"
    assert _client(auditor).post("/api/v1/models/m/versions", {"run_id": version.run_id}).status_code == 403
    reject = _client(approver).post("/api/v1/promotion-requests/999/reject", {"comment": "no"}, format="json")
    assert reject.status_code == 404


def test_rollback_api(register, promote, approver, second_approver):
    v1, v2 = register(), register()
    promote(v1)
    promote(v2)
    asked = _client(approver).post("/api/v1/models/iris-clf/rollback", {"reason": "v2 is slow"}, format="json")
    assert asked.status_code == 201
    assert asked.json()["kind"] == "rollback"
    assert asked.json()["version"] == 1
    done = _client(second_approver).post(f"/api/v1/promotion-requests/{asked.json()['id']}/approve", {}, format="json")
    assert done.status_code == 200
    assert ModelVersion.objects.get(pk=v1.pk).stage == "Production"
    emergency = _client(approver).post(
        "/api/v1/models/iris-clf/rollback", {"reason": "pager", "emergency": True}, format="json"
    )
    assert emergency.status_code == 200
    assert emergency.json()["version"] == 2
    assert emergency.json()["stage"] == "Production"


def test_audit_log_api_is_for_auditors(register, scientist, auditor):
    register()
    assert _client(scientist).get("/api/v1/audit-log").status_code == 403
    response = _client(auditor).get("/api/v1/audit-log", {"action": "version.registered"})
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 1
    assert body["results"][0]["actor"] == "dana"
    assert body["results"][0]["object_type"] == "registry.modelversion"
    since = _client(auditor).get("/api/v1/audit-log", {"since": "2000-01-01", "actor": "dana"}).json()
    assert since["count"] == AuditEntry.objects.filter(actor_name="dana").count()
    today = _client(auditor).get("/api/v1/audit-log", {"until": timezone.localdate().isoformat()}).json()
    assert today["count"] == AuditEntry.objects.count()  # a date means the whole day
    later = _client(auditor).get("/api/v1/audit-log", {"since": "2999-01-01T00:00:00Z"}).json()
    assert later["count"] == 0
    bad = _client(auditor).get("/api/v1/audit-log", {"since": "yesterday"})
    assert bad.status_code == 400
    assert bad.json()["field"] == "since"


def test_audit_entries_carry_the_request_id_and_ip(train, scientist):
    run = train()
    response = _client(scientist).post(
        "/api/v1/models/m/versions", {"run_id": run.pk}, format="json", HTTP_X_REQUEST_ID="req-123"
    )
    assert response["X-Request-ID"] == "req-123"
    entry = AuditEntry.objects.get(action="version.registered")
    assert entry.request_id == "req-123"
    assert entry.ip_address == "127.0.0.1"


def test_token_authentication_reaches_the_registry(register, django_user_model, auditor):
    from rest_framework.authtoken.models import Token

    register()
    token = Token.objects.create(user=auditor)
    client = APIClient()
    assert client.get("/api/v1/models").status_code == 401
    response = client.get("/api/v1/models", HTTP_AUTHORIZATION=f"Token {token.key}")
    assert response.status_code == 200
    assert response.json()[0]["name"] == "iris-clf"
