"""The README's prediction examples, taken from the README itself and sent as typed, with the app's token."""

import json
import re
from pathlib import Path

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()

pytestmark = pytest.mark.django_db


def _payload(pattern):
    match = re.search(pattern, README, flags=re.M)
    assert match, pattern
    return json.loads(match.group(1))


@pytest.fixture
def churn_in_production(train, register, promote, django_capture_on_commit_callbacks):
    run = train(experiment="readme", dataset="customer_churn", n_samples=200)
    with django_capture_on_commit_callbacks(execute=True):
        version = register(name="churn", run=run)
        promote(version)
    return version


@pytest.fixture
def app_client(application, settings):
    settings.SERVING_REQUIRE_AUTH = True  # as a fresh install runs
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=application)[0].key}")
    return client


def test_the_readme_predict_row_infer_and_feedback_answer_with_the_apps_token(churn_in_production, app_client):
    row = _payload(r"^ROW='(.+)'$")
    answer = app_client.post("/api/v1/models/churn/predict", row, format="json")
    assert answer.status_code == 200, answer.json()
    assert answer.json()["model"] == "churn"
    assert answer.json()["predictions"][0]["label"] in {"yes", "no"}

    infer = _payload(r"""^curl -H "\$T" \$API/v2/models/churn/infer -d '(.+)'$""")
    # the README's line, as curl -d sends it: labelled a form
    form = "application/x-www-form-urlencoded"
    response = app_client.generic("POST", "/v2/models/churn/infer", json.dumps(infer), content_type=form)
    assert response.status_code == 200, response.content
    assert response.json()["id"] == "1"
    assert [output["name"] for output in response.json()["outputs"]][0] == "label"

    feedback = _payload(r"""feedback -d '(\{"actual": "no"\})'""")
    response = app_client.post(f"/api/v1/predictions/{answer.json()['request_id']}/feedback", feedback, format="json")
    assert response.status_code in (200, 201), response.json()


def test_the_readme_infer_without_a_token_is_refused(churn_in_production, settings):
    settings.SERVING_REQUIRE_AUTH = True
    infer = _payload(r"""^curl -H "\$T" \$API/v2/models/churn/infer -d '(.+)'$""")
    assert APIClient().post("/v2/models/churn/infer", infer, format="json").status_code == 401
