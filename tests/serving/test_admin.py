"""The serving admin's lists: what answers first with its real share, and a prediction log a person can read."""

import pytest
from django.urls import reverse

from tests.serving.conftest import IRIS_ROW

pytestmark = pytest.mark.django_db


def test_deployments_list_active_first_with_the_primarys_real_share(
    production, register, train, put_on_traffic, admin_client
):
    canary = register(run=train(n_estimators=9))
    put_on_traffic(canary, mode="canary", percent=30)
    page = admin_client.get(reverse("admin:serving_deployment_changelist")).content.decode()
    assert "70 %" in page  # the primary answers what the canary leaves it
    assert "30 %" in page
    assert "100 %" not in page


def test_the_prediction_log_reads_as_labels_rounded_numbers_and_no_version_0(production, client, admin_client):
    client.post("/api/v1/models/iris-clf/predict", {"instances": [IRIS_ROW]}, format="json")
    client.post(
        "/api/v1/models/iris-clf/predict", {"instances": [{**IRIS_ROW, "petal_width_cm": "wide"}]}, format="json"
    )
    page = admin_client.get(reverse("admin:serving_predictionlog_changelist")).content.decode()
    assert "iris-clf v1" in page
    assert "iris-clf v0" not in page
    assert "&quot;setosa&quot;" not in page  # a label, not JSON
    assert ">setosa<" in page
    assert " ms<" in page
    assert "expects a number" in page
