"""A NUL character in a categorical input: PostgreSQL's jsonb refuses it, so once logged it took the log's
whole batch (other requests' rows) down with it, or answered 500 with the log written in the request."""

from rest_framework.test import APIClient

from serving.models import PredictionLog
from tests.serving.crm.helpers import ROW


def test_a_nul_character_in_the_inputs_is_a_400_and_the_log_keeps_working(churn, serving, application):
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(application)
    response = client.post(
        "/api/v1/models/churn/predict", {"instances": [{**ROW, "contract_type": "a\x00b"}]}, format="json"
    )
    assert response.status_code == 400, response.content
    assert "NUL" in response.json()["error"]
    assert response.json()["field"] == "body"
    assert client.post("/api/v1/models/churn/predict", {"instances": [ROW]}, format="json").status_code == 200
    assert PredictionLog.objects.filter(model_name="churn", error="").count() == 1
