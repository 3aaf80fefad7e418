import pytest

from governance.models import AuditEntry
from serving.models import Deployment, PredictionLog
from tests.serving.conftest import IRIS_ROW

pytestmark = pytest.mark.django_db


def test_register_makes_an_onnx_form_that_matches(production):
    assert production.serving_form == "onnx"
    assert production.onnx_max_abs_diff <= 1e-5
    assert "matches scikit-learn" in production.serving_note


def test_promotion_creates_the_production_deployment(production):
    deployment = Deployment.objects.get(status="active")
    assert (deployment.version, deployment.environment, deployment.mode) == (production, "production", "primary")
    assert AuditEntry.objects.filter(action="deployment.created").count() == 1


def test_native_predict_with_instances_and_inputs(production, client):
    response = client.post("/api/v1/models/iris-clf/predict", {"instances": [IRIS_ROW, IRIS_ROW]}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["version"] == 1
    assert body["deployment"] == "primary"
    assert len(body["predictions"]) == 2
    first = body["predictions"][0]
    assert first["label"] == "setosa"
    assert set(first["probabilities"]) == {"setosa", "versicolor", "virginica"}
    assert first["confidence"] == max(first["probabilities"].values())
    assert response["X-Request-ID"] == body["request_id"]
    rows = client.post("/api/v1/models/iris-clf/predict", {"inputs": [list(IRIS_ROW.values())]}, format="json")
    assert rows.json()["predictions"][0]["label"] == "setosa"
    logged = PredictionLog.objects.filter(request_id=body["request_id"]).order_by("row")
    assert [entry.row for entry in logged] == [0, 1]
    assert logged[0].inputs == IRIS_ROW
    assert logged[0].prediction == "setosa"
    assert logged[0].deployment_mode == "primary"


def test_a_version_by_number_answers_in_staging_or_production_and_any_other_only_with_the_permission(
    register, production, promote, client, engineer, scientist, django_capture_on_commit_callbacks
):
    v2 = register()
    url = "/api/v1/models/iris-clf/versions/{}/predict"
    ok = client.post(url.format(1), {"instances": [IRIS_ROW]}, format="json")
    assert (ok.status_code, ok.json()["version"], ok.json()["deployment"]) == (200, 1, "direct")
    client.force_authenticate(scientist)
    refused = client.post(url.format(2), {"instances": [IRIS_ROW]}, format="json")
    assert refused.status_code == 403
    assert "v2 by number (it is None, not in Staging or Production)" in refused.json()["error"]
    client.force_authenticate(engineer)  # predict_any_version: shadow testing, debugging
    assert client.post(url.format(2), {"instances": [IRIS_ROW]}, format="json").json()["version"] == 2
    with django_capture_on_commit_callbacks(execute=True):
        promote(v2)  # v1 is archived now
    client.force_authenticate(scientist)
    archived = client.post(url.format(1), {"instances": [IRIS_ROW]}, format="json")
    assert archived.status_code == 403
    assert "it is Archived" in archived.json()["error"]
    assert client.post(url.format(2), {"instances": [IRIS_ROW]}, format="json").status_code == 200


BAD_BODIES = [
    ({"instances": [{k: v for k, v in IRIS_ROW.items() if k != "petal_width_cm"}]}, 422, "instances[0].petal_width_cm"),
    ({"instances": [{**IRIS_ROW, "colour": 1}]}, 422, "instances[0].colour"),
    ({"instances": [{**IRIS_ROW, "petal_width_cm": "wide"}]}, 422, "instances[0].petal_width_cm"),
    ({"instances": [{**IRIS_ROW, "petal_width_cm": True}]}, 422, "instances[0].petal_width_cm"),
    ({"instances": [{**IRIS_ROW, "petal_width_cm": [1, 2]}]}, 422, "instances[0].petal_width_cm"),
    ({"instances": []}, 400, "instances"),
    ({"instances": [[1, 2]]}, 400, "instances[0]"),
    ({"instances": {"a": 1}}, 400, "instances"),
    ({"inputs": [[1, 2, 3]]}, 422, "inputs[0]"),
    ({"rows": []}, 400, "body"),
    ([1, 2, 3], 400, "body"),
]


@pytest.mark.parametrize(("body", "status", "field"), BAD_BODIES)
def test_bad_input_is_a_4xx_naming_the_field(production, client, body, status, field):
    response = client.post("/api/v1/models/iris-clf/predict", body, format="json")
    assert response.status_code == status, response.json()
    assert response.json()["field"] == field
    assert response.json()["error"]


@pytest.mark.parametrize("raw", [b"{not json", b'{"instances": [{"petal_width_cm": NaN}]}', b"\xff\xfe", b""])
def test_malformed_json_nan_and_empty_bodies(production, client, raw):
    response = client.generic("POST", "/api/v1/models/iris-clf/predict", raw, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["field"] == "body"


def test_too_many_rows_and_huge_bodies(production, client, settings):
    settings.SERVING_MAX_ROWS = 5
    response = client.post("/api/v1/models/iris-clf/predict", {"instances": [IRIS_ROW] * 6}, format="json")
    assert response.status_code == 400
    assert "limit is 5" in response.json()["error"]
    settings.SERVING_MAX_BODY_BYTES = 100
    response = client.post("/api/v1/models/iris-clf/predict", {"instances": [IRIS_ROW] * 3}, format="json")
    assert response.status_code == 400
    assert "limit is 100" in response.json()["error"]


def test_unknown_model_version_and_nothing_in_production(register, client):
    assert client.post("/api/v1/models/nope/predict", {"instances": [IRIS_ROW]}, format="json").status_code == 404
    register()
    missing = client.post("/api/v1/models/iris-clf/predict", {"instances": [IRIS_ROW]}, format="json")
    assert missing.status_code == 404
    assert "no version in production" in missing.json()["error"]
    assert (
        client.post("/api/v1/models/iris-clf/versions/9/predict", {"inputs": [[1, 2, 3, 4]]}, format="json").status_code
        == 404
    )


def test_refused_requests_are_logged_and_counted(production, client):
    from prometheus_client import REGISTRY

    before = (
        REGISTRY.get_sample_value(
            "prediction_errors_total", {"model": "iris-clf", "model_version": "1", "error_type": "Unprocessable"}
        )
        or 0
    )
    response = client.post("/api/v1/models/iris-clf/predict", {"instances": [{"x": 1}]}, format="json")
    assert response.status_code == 422
    after = REGISTRY.get_sample_value(
        "prediction_errors_total", {"model": "iris-clf", "model_version": "1", "error_type": "Unprocessable"}
    )
    assert after == before + 1
    logged = PredictionLog.objects.get(request_id=response["X-Request-ID"])
    assert "missing feature" in logged.error


def test_short_forms_predict_and_health(production, client, settings):
    settings.SERVING_DEFAULT_MODEL = "iris-clf"
    health = client.get("/health").json()
    assert health == {
        "status": "ok",
        "model_loaded": True,
        "model": "iris-clf",
        "version": 1,
        "serving_form": "onnx",
        "error": "",
    }
    assert client.post("/predict", {"instances": [IRIS_ROW]}, format="json").json()["version"] == 1
    settings.SERVING_DEFAULT_MODEL = "nothing-here"
    down = client.get("/health")
    assert down.status_code == 503
    assert down.json()["model_loaded"] is False


def test_auth_when_required(production, client, settings, django_user_model):
    from rest_framework.authtoken.models import Token

    settings.SERVING_REQUIRE_AUTH = True
    assert client.post("/api/v1/models/iris-clf/predict", {"instances": [IRIS_ROW]}, format="json").status_code == 401
    token = Token.objects.create(user=django_user_model.objects.create_user("checkout-app"))
    response = client.post(
        "/api/v1/models/iris-clf/predict",
        {"instances": [IRIS_ROW]},
        format="json",
        HTTP_AUTHORIZATION=f"Token {token.key}",
    )
    assert response.status_code == 200


def test_throttling_counts_each_client_on_its_own(production, settings, scientist, engineer):
    import time

    from rest_framework.test import APIClient

    from serving import access

    settings.SERVING_THROTTLE_RATE = "3/hour"
    access._counts.clear()
    if 3600 - time.time() % 3600 < 10:  # fixed windows: don't start a count that the hour's end would reset
        time.sleep(3600 - time.time() % 3600 + 0.1)
    clients = {}
    for user in (scientist, engineer):
        clients[user.username] = APIClient()
        clients[user.username].force_authenticate(user)

    def ask(name):
        return clients[name].post("/api/v1/models/iris-clf/predict", {"instances": [IRIS_ROW]}, format="json")

    assert [ask("dana").status_code for _ in range(4)] == [200, 200, 200, 429]
    retry_after = int(ask("dana")["Retry-After"])  # until the hour's window ends
    assert abs(retry_after - (3600 - time.time() % 3600)) <= 2
    assert [ask("eli").status_code for _ in range(3)] == [200, 200, 200]  # another client has its own count
    assert ask("dana").status_code == 429


def test_throttling_counts_each_anonymous_address_on_its_own(production, settings, client):
    import time

    from serving import access

    settings.SERVING_THROTTLE_RATE = "2/hour"
    access._counts.clear()
    if 3600 - time.time() % 3600 < 10:  # fixed windows: don't start a count that the hour's end would reset
        time.sleep(3600 - time.time() % 3600 + 0.1)

    def ask(address):
        url = "/api/v1/models/iris-clf/predict"
        return client.post(url, {"instances": [IRIS_ROW]}, format="json", REMOTE_ADDR=address).status_code

    assert [ask("10.0.0.1") for _ in range(3)] == [200, 200, 429]
    assert [ask("10.0.0.2") for _ in range(2)] == [200, 200]  # another address, another count


def test_feedback_is_stored_against_the_prediction(production, client, application):
    request_id = client.post("/api/v1/models/iris-clf/predict", {"instances": [IRIS_ROW]}, format="json").json()[
        "request_id"
    ]
    client.force_authenticate(application)
    feedback = f"/api/v1/predictions/{request_id}/feedback"
    response = client.post(feedback, {"actual": "setosa"}, format="json")
    assert response.status_code == 200
    assert response.json()["correct"] is True
    assert PredictionLog.objects.get(request_id=request_id).actual == "setosa"
    assert client.post(feedback, {"actual": "setosa"}, format="json").status_code == 200  # sent twice: one label
    conflict = client.post(feedback, {"actual": "virginica"}, format="json")
    assert conflict.status_code == 409
    assert '"correction": true' in conflict.json()["error"]
    assert client.post("/api/v1/predictions/nope/feedback", {"actual": "x"}, format="json").status_code == 404
    assert client.post(feedback, {"actual": None}, format="json").status_code == 400


def test_a_label_that_is_not_a_class_is_refused_and_the_truth_still_lands(production, client, application):
    request_id = client.post("/api/v1/models/iris-clf/predict", {"instances": [IRIS_ROW]}, format="json").json()[
        "request_id"
    ]
    client.force_authenticate(application)
    feedback = f"/api/v1/predictions/{request_id}/feedback"
    typo = client.post(feedback, {"actual": "maybe"}, format="json")
    assert typo.status_code == 422
    assert typo.json()["field"] == "actual"
    assert typo.json()["classes"] == ["setosa", "versicolor", "virginica"]
    assert PredictionLog.objects.get(request_id=request_id).actual is None  # nothing stored, nothing counted
    assert client.post(feedback, {"actual": "versicolor"}, format="json").status_code == 200


def test_a_correction_replaces_the_label_and_is_audited(production, client, application):
    request_id = client.post("/api/v1/models/iris-clf/predict", {"instances": [IRIS_ROW]}, format="json").json()[
        "request_id"
    ]
    client.force_authenticate(application)
    feedback = f"/api/v1/predictions/{request_id}/feedback"
    client.post(feedback, {"actual": "virginica"}, format="json")
    corrected = client.post(feedback, {"actual": "setosa", "correction": True}, format="json")
    assert (corrected.status_code, corrected.json()["actual"], corrected.json()["correct"]) == (200, "setosa", True)
    entry = AuditEntry.objects.get(action="feedback.corrected")
    assert (entry.before, entry.after["actual"], entry.actor_name) == ({"actual": "virginica"}, "setosa", "app")


def test_feedback_needs_the_permission_to_send_it(production, client, auditor):
    request_id = client.post("/api/v1/models/iris-clf/predict", {"instances": [IRIS_ROW]}, format="json").json()[
        "request_id"
    ]
    client.force_authenticate(auditor)
    refused = client.post(f"/api/v1/predictions/{request_id}/feedback", {"actual": "setosa"}, format="json")
    assert refused.status_code == 403
    assert "give_feedback" in refused.json()["error"]


def test_feedback_lands_on_the_answer_not_on_the_shadow(
    production, register, put_on_traffic, client, application, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        put_on_traffic(register(), mode="shadow")
    request_id = client.post("/api/v1/models/iris-clf/predict", {"instances": [IRIS_ROW]}, format="json").json()[
        "request_id"
    ]
    client.force_authenticate(application)
    client.post(f"/api/v1/predictions/{request_id}/feedback", {"actual": "setosa"}, format="json")
    rows = dict(PredictionLog.objects.filter(request_id=request_id).values_list("deployment_mode", "actual"))
    assert rows == {"primary": "setosa", "shadow": None}


def test_build_fast_forms_converts_older_versions(register):
    from django.core.management import call_command

    from registry.models import ModelVersion

    version = register()
    ModelVersion.objects.filter(pk=version.pk).update(serving_form="sklearn", onnx_path="", onnx_sha256="")
    call_command("build_fast_forms", "--user", "dana")
    version.refresh_from_db()
    assert version.serving_form == "onnx"
    assert version.onnx_sha256
    entry = AuditEntry.objects.get(action="version.fast_form_built")
    assert entry.before["serving_form"] == "sklearn"
    assert entry.after["serving_form"] == "onnx"


NASTY = [
    b'{"instances": [{"sepal_length_cm": 1'
    + b"0" * 400
    + b', "sepal_width_cm": 1, "petal_length_cm": 1, "petal_width_cm": 1}]}',
    b'{"instances": [{"sepal_length_cm": 1e400, "sepal_width_cm": 1, "petal_length_cm": 1, "petal_width_cm": 1}]}',
    b'{"instances": [{"sepal_length_cm": {"a": [1]}, "sepal_width_cm": 1, "petal_length_cm": 1, "petal_width_cm": 1}]}',
    b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"instances": [null]}',
    b'{"inputs": [[null, null, null, null]]}',
    b'{"inputs": "abc"}',
    b'{"instances": [{"sepal_length_cm": "\\u0000", "sepal_width_cm": 1, "petal_length_cm": 1, "petal_width_cm": 1}]}',
    b'"just a string"',
    b"null",
    b'{"instances": [{}], "inputs": [[1]]}',
    b'{"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [[1], [1, 2, [3]]]}]}',
    b'{"inputs": [{"name": "input-0", "shape": [99999999999, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}',
]


@pytest.mark.parametrize("raw", NASTY)
def test_no_input_gives_a_500(production, client, raw):
    for url in ("/api/v1/models/iris-clf/predict", "/api/v1/models/iris-clf/invocations", "/v2/models/iris-clf/infer"):
        response = client.generic("POST", url, raw, content_type="application/json")
        assert response.status_code < 500, (url, response.content[:300])
        if response.status_code >= 400:
            assert "error" in response.json()


def test_an_onnx_form_that_disagrees_beyond_the_tolerance_is_not_kept_and_scikit_learn_serves(
    register, promote, settings, client, django_capture_on_commit_callbacks
):
    settings.ONNX_MAX_ABS_DIFF = 0.0  # float32 trees differ from scikit-learn's float64 by ~1e-8: too much now
    settings.SERVING_DEFAULT_MODEL = "iris-clf"
    with django_capture_on_commit_callbacks(execute=True):
        version = register()
        promote(version)
    assert (version.serving_form, version.onnx_path) == ("sklearn", "")
    assert "ONNX disagrees with scikit-learn" in version.serving_note
    assert version.onnx_max_abs_diff > 0
    answer = client.post("/api/v1/models/iris-clf/predict", {"instances": [IRIS_ROW]}, format="json").json()
    assert answer["predictions"][0]["label"] == "setosa"
    assert client.get("/health").json()["serving_form"] == "sklearn"
