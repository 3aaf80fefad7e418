"""The monitoring API as a client sees it: traffic and accuracy, a model's drift, two datasets' drift."""

import datetime as dt

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from monitoring.services import hours_compute
from monitoring.windows import hour_floor
from tests.monitoring.conftest import hours_ago

pytestmark = pytest.mark.django_db


def _client(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def shifted_traffic(churn_reference, churn_frame, log_writer):
    current = churn_frame.sample(250, random_state=3).reset_index(drop=True)
    current["monthly_charges"] = current["monthly_charges"] + 30
    log_writer.write(current, at=hours_ago(1), per_request=5)
    return current


def test_drift_get_before_any_run_then_post_computes_and_get_returns_it(shifted_traffic, engineer, auditor):
    client = _client(engineer)
    response = client.get("/api/v1/models/churn/drift?window=24h")
    assert response.status_code == 404
    assert "POST to this URL computes it now" in response.json()["error"]

    response = client.post("/api/v1/models/churn/drift?window=24h")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ok"
    assert body["version"] == 1
    assert body["rows"] == 250
    flagged = {f["feature"] for f in body["features"] if f["drifted"]}
    assert "monthly_charges" in flagged
    row = next(f for f in body["features"] if f["feature"] == "monthly_charges")
    assert set(row) >= {"method", "score", "threshold", "reference_rows", "current_rows", "effect_sizes"}
    assert {p["column"] for p in body["prediction"]} == {"prediction", "confidence"}

    again = _client(auditor).get("/api/v1/models/churn/drift?window=24h")
    assert again.status_code == 200
    assert again.json()["id"] == body["id"]


def test_drift_refusals_name_the_field(shifted_traffic, engineer, auditor):
    client = _client(engineer)
    assert client.post("/api/v1/models/churn/drift?window=soon").json()["field"] == "window"
    assert client.post("/api/v1/models/churn/drift?method=magic").json()["field"] == "method"
    assert client.post("/api/v1/models/churn/drift?kind=guess").json()["field"] == "kind"
    assert client.post("/api/v1/models/churn/drift?version=x").status_code == 400
    assert client.post("/api/v1/models/churn/drift?version=9").status_code == 404
    assert client.post("/api/v1/models/nope/drift").status_code == 404
    forbidden = _client(auditor).post("/api/v1/models/churn/drift")
    assert forbidden.status_code == 403
    assert "view_predictionlog" in forbidden.json()["error"]
    assert APIClient().get("/api/v1/models/churn/drift").status_code == 401


def test_sketch_drift_over_a_month_by_api(shifted_traffic, engineer):
    now = hour_floor(timezone.now())
    hours_compute(model_name="churn", start=now - dt.timedelta(hours=3), end=now + dt.timedelta(hours=1))
    response = _client(engineer).post("/api/v1/models/churn/drift", {"window": "30d", "kind": "sketch"}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["kind"] == "sketch"
    assert body["rows"] == 250
    charges = next(f for f in body["features"] if f["feature"] == "monthly_charges")
    assert charges["method"] == "psi"
    assert charges["drifted"] is True
    lower, upper = charges["effect_sizes"]["ks_distance_bounds"]
    assert 0 <= lower <= upper <= 1


def test_monitoring_series_and_accuracy(shifted_traffic, engineer):
    now = hour_floor(timezone.now())
    hours_compute(model_name="churn", start=now - dt.timedelta(hours=3), end=now + dt.timedelta(hours=1))
    response = _client(engineer).get("/api/v1/models/churn/monitoring?granularity=hour")
    assert response.status_code == 200
    body = response.json()
    assert body["granularity"] == "hour"
    point = body["points"][0]
    assert point["rows"] == 250
    assert point["requests"] == 50
    assert point["mode"] == "primary"
    assert set(point["latency_ms"]) == {"p50", "p95", "p99", "from"}
    assert sum(point["classes"].values()) == 250
    assert point["accuracy"] is None  # no feedback yet
    assert 0 < point["estimated_accuracy"] <= 1
    assert body["accuracy"][0]["validation_accuracy"] is not None

    day = _client(engineer).get(
        f"/api/v1/models/churn/monitoring?granularity=day&from={(now - dt.timedelta(days=2)).date()}"
    )
    assert day.status_code == 200
    assert day.json()["points"][0]["rows"] == 250
    bad = _client(engineer).get("/api/v1/models/churn/monitoring?granularity=week")
    assert bad.status_code == 400
    assert bad.json()["field"] == "granularity"
    assert _client(engineer).get("/api/v1/models/churn/monitoring?from=yesterday").json()["field"] == "from"


def test_drift_between_two_datasets(scientist):

    response = _client(scientist).post(
        "/api/v1/drift", {"reference": "iris", "current": "iris", "method": "psi"}, format="json"
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["dataset_drift"] is False
    assert body["share_drifted"] == 0.0
    assert [f["feature"] for f in body["features"]] == [
        "sepal_length_cm",
        "sepal_width_cm",
        "petal_length_cm",
        "petal_width_cm",
    ]
    assert all(f["method"] == "psi" and f["score"] == 0.0 for f in body["features"])
    unknown = _client(scientist).post("/api/v1/drift", {"reference": "nope", "current": "iris"}, format="json")
    assert unknown.status_code == 400
    assert unknown.json()["field"] == "reference"
    missing = _client(scientist).post("/api/v1/drift", {"current": "iris"}, format="json")
    assert missing.status_code == 400
