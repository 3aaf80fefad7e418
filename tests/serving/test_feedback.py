"""Feedback through the API, each refusal with its message and field, and the row it lands on."""

import pytest

from core.errors import Conflict
from governance.models import AuditEntry
from serving.models import PredictionLog
from serving.services.feedback import feedback_record
from tests.serving.conftest import IRIS_ROW

pytestmark = pytest.mark.django_db


def _predict(client, rows=1):
    response = client.post("/api/v1/models/iris-clf/predict", {"instances": [IRIS_ROW] * rows}, format="json")
    return response.json()["request_id"]


def test_each_refusal_says_why_and_names_the_field(production, client, application, auditor):
    request_id = _predict(client)
    feedback = f"/api/v1/predictions/{request_id}/feedback"
    client.force_authenticate(auditor)
    assert client.post(feedback, {"actual": "setosa"}, format="json").json() == {
        "error": "audrey may not send feedback: it needs the give_feedback permission"
    }
    client.force_authenticate(application)
    for not_a_label in ({"label": "setosa"}, ["setosa"], True):
        refused = client.post(feedback, {"actual": not_a_label}, format="json")
        assert (refused.status_code, refused.json()) == (
            400,
            {"error": "must be the true label (a string or a number)", "field": "actual"},
        )
    missing = client.post("/api/v1/predictions/nope/feedback", {"actual": "setosa", "row": 3}, format="json")
    assert missing.json() == {"error": "no logged prediction 'nope' row 3 (it may still be queued for the log)"}
    typo = client.post(feedback, {"actual": "maybe"}, format="json").json()
    assert typo == {
        "error": "'maybe' is not a class of iris-clf v1; give one of: setosa, versicolor, virginica",
        "classes": ["setosa", "versicolor", "virginica"],
        "field": "actual",
    }
    client.post(feedback, {"actual": "setosa"}, format="json")
    conflict = client.post(feedback, {"actual": "virginica"}, format="json").json()
    assert conflict == {
        "error": f"feedback for {request_id} row 0 was already given as 'setosa'; "
        'send it again with "correction": true to replace it',
        "field": "actual",
    }
    assert not PredictionLog.objects.filter(actual="virginica").exists()


def test_a_refused_prediction_has_nothing_to_judge(production, client, application):
    refused = client.post("/api/v1/models/iris-clf/predict", {"instances": [{"x": 1}]}, format="json")
    client.force_authenticate(application)
    answer = client.post(f"/api/v1/predictions/{refused['X-Request-ID']}/feedback", {"actual": "setosa"}, format="json")
    assert answer.status_code == 409
    error = PredictionLog.objects.get(request_id=refused["X-Request-ID"]).error
    assert answer.json()["error"] == (
        f"{refused['X-Request-ID']} row 0 was refused ({error[:100]}): it has no prediction to judge"
    )


def test_feedback_lands_on_its_row_with_its_time_and_a_correction_is_audited(production, client, application):
    request_id = _predict(client, rows=3)
    client.force_authenticate(application)
    feedback = f"/api/v1/predictions/{request_id}/feedback"
    assert client.post(feedback, {"actual": "versicolor", "row": 1}, format="json").json()["row"] == 1
    rows = PredictionLog.objects.filter(request_id=request_id).order_by("row")
    assert [row.actual for row in rows] == [None, "versicolor", None]
    assert [row.feedback_at is not None for row in rows] == [False, True, False]
    client.post(feedback, {"actual": "setosa", "row": 1, "correction": True}, format="json")
    entry = AuditEntry.objects.get(action="feedback.corrected")
    assert (entry.before, entry.after) == ({"actual": "versicolor"}, {"actual": "setosa", "prediction": "setosa"})


def test_the_service_defaults_to_row_zero_and_no_correction(production, client, application):
    request_id = _predict(client, rows=2)
    assert feedback_record(request_id=request_id, actual="setosa", by=application).row == 0
    with pytest.raises(Conflict, match="already given as 'setosa'"):
        feedback_record(request_id=request_id, actual="virginica", by=application)
    assert list(
        PredictionLog.objects.filter(request_id=request_id).order_by("row").values_list("actual", flat=True)
    ) == [
        "setosa",
        None,
    ]


def test_the_label_is_checked_against_the_classes_of_the_version_that_answered(
    production, register, train, client, application
):
    wine = train(dataset="wine")
    register(name="a-wine", run=wine)  # another model's v1, first by name, with other classes
    register(name="iris-clf", run=wine, breaking_change=True)  # v2 has other classes than v1, which answered
    request_id = _predict(client)
    client.force_authenticate(application)
    answer = client.post(f"/api/v1/predictions/{request_id}/feedback", {"actual": "setosa"}, format="json")
    assert (answer.status_code, answer.json()["actual"]) == (200, "setosa")
