"""The REST API as an application or a data scientist's script uses it."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from experiments import services
from experiments.models import DatasetVersion, Experiment, Run
from tests.helpers import run_dispatches

pytestmark = pytest.mark.django_db


def _post_run(api_client, django_capture_on_commit_callbacks, **body):
    payload = {"experiment": "api", "dataset": "iris", "algorithm": "random_forest", **body}
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = api_client.post("/api/v1/runs", payload, format="json")
    return response, callbacks


def test_launch_returns_202_and_the_run_trains_once_a_worker_takes_it(api_client, django_capture_on_commit_callbacks):
    response, callbacks = _post_run(api_client, django_capture_on_commit_callbacks, params={"n_estimators": 9})
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "QUEUED"
    assert body["url"].endswith(f"/api/v1/runs/{body['id']}")
    assert len(run_dispatches(callbacks)) == 1  # the Celery dispatch, sent on commit

    services.run_execute(run_id=body["id"])  # what the worker does with the message

    detail = api_client.get(f"/api/v1/runs/{body['id']}").json()
    assert detail["status"] == "FINISHED"
    assert detail["params"]["n_estimators"] == "9"
    assert detail["metrics"]["accuracy"] > 0.8
    assert {a["path"] for a in detail["artifacts"]} >= {"model/model.joblib", "confusion_matrix.json"}
    assert detail["children"] == []


def test_sweep_launch_lists_its_children(api_client, django_capture_on_commit_callbacks):
    response, _ = _post_run(
        api_client,
        django_capture_on_commit_callbacks,
        sweep={"n_estimators": [5, 10], "max_depth": [2, 3]},
        sweep_metric="f1_macro",
    )
    assert response.status_code == 202
    children = response.json()["children"]
    assert len(children) == 4
    detail = api_client.get(f"/api/v1/runs/{response.json()['id']}").json()
    assert [child["id"] for child in detail["children"]] == children
    assert detail["sweep_metric"] == "f1_macro"


def test_a_run_s_dataset_as_the_api_writes_it_can_be_posted_back(api_client, django_capture_on_commit_callbacks):
    first, _ = _post_run(api_client, django_capture_on_commit_callbacks)
    written = api_client.get(f"/api/v1/runs/{first.json()['id']}").json()["dataset"]
    assert written.startswith("iris@")

    again, _ = _post_run(api_client, django_capture_on_commit_callbacks, dataset=written)

    assert again.status_code == 202, again.content
    assert api_client.get(f"/api/v1/runs/{again.json()['id']}").json()["dataset"] == written


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        ("iris@0000000000", "no version of dataset 'iris' has a sha256 starting '0000000000'"),
        ("iris@abc", "at least 8 hex digits"),
        ("iris@not-a-hash", "at least 8 hex digits"),
        ("nope@0123456789ab", "no version of dataset 'nope'"),
    ],
)
def test_a_dataset_named_with_a_hash_that_matches_nothing_is_a_400_naming_it(api_client, dataset, message):
    services.dataset_version_builtin(name="iris")
    response = api_client.post(
        "/api/v1/runs", {"experiment": "api", "dataset": dataset, "algorithm": "random_forest"}, format="json"
    )
    assert response.status_code == 400, response.content
    assert response.json()["field"] == "dataset"
    assert message in response.json()["error"]
    assert not Run.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"algorithm": "svm"}, "algorithm"),
        ({"dataset": "nope"}, "dataset"),
        ({"params": {"foo": 1}}, "params.foo"),
        ({"params": {"n_estimators": "many"}}, "params.n_estimators"),
        ({"params": {"n_estimators": [1, 2]}}, "params.n_estimators"),
        ({"params": "n_estimators=5"}, "params"),
        ({"sweep": {"max_depth": "1,2"}}, "sweep.max_depth"),
        ({"sweep": {"max_depth": ["x"]}}, "sweep.max_depth"),
        ({"n_samples": 5, "dataset": "customer_churn"}, "n_samples"),
        ({"experiment": ""}, "experiment"),
    ],
)
def test_bad_launch_input_is_a_400_naming_the_field_and_creates_nothing(api_client, body, field):
    payload = {"experiment": "api", "dataset": "iris", "algorithm": "random_forest", **body}
    response = api_client.post("/api/v1/runs", payload, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["field"] == field
    assert response.json()["error"]
    assert not Run.objects.exists()
    assert not Experiment.objects.exists()


def test_unparseable_json_is_a_400(api_client):
    reply = api_client.post("/api/v1/runs", "{not json", content_type="application/json")
    assert reply.status_code == 400
    assert "JSON parse error" in reply.json()["error"]


def test_run_list_filters_and_experiment_list(api_client, django_capture_on_commit_callbacks):
    _post_run(api_client, django_capture_on_commit_callbacks)
    _post_run(api_client, django_capture_on_commit_callbacks, experiment="other")
    runs = api_client.get("/api/v1/runs?experiment=other").json()
    assert runs["count"] == 1
    assert runs["results"][0]["experiment"] == "other"
    assert api_client.get("/api/v1/runs?status=QUEUED").json()["count"] == 2
    assert api_client.get("/api/v1/runs?status=DONE").json()["field"] == "status"
    experiments = api_client.get("/api/v1/experiments").json()["results"]
    assert {(e["name"], e["run_count"]) for e in experiments} == {("api", 1), ("other", 1)}


def test_metric_history(api_client, django_capture_on_commit_callbacks):
    response, _ = _post_run(
        api_client, django_capture_on_commit_callbacks, algorithm="gradient_boosting", params={"n_estimators": 7}
    )
    run_id = response.json()["id"]
    services.run_execute(run_id=run_id)
    history = api_client.get(f"/api/v1/runs/{run_id}/metrics/val_log_loss").json()
    assert [point["step"] for point in history["history"]] == list(range(1, 8))
    missing = api_client.get(f"/api/v1/runs/{run_id}/metrics/nope")
    assert missing.status_code == 404
    assert missing.json()["field"] == "key"
    assert "val_log_loss" in missing.json()["error"]
    unknown = api_client.get("/api/v1/runs/999999")
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "run 999999 does not exist", "field": "run_id"}


def test_dataset_upload(api_client):
    csv = b"x,y,label\n1,2,a\n2,3,b\n3,4,a\n4,5,b\n"
    first = api_client.post(
        "/api/v1/datasets",
        {"name": "xy", "target": "label", "file": SimpleUploadedFile("xy.csv", csv)},
        format="multipart",
    )
    assert first.status_code == 201
    assert first.json()["n_rows"] == 4
    again = api_client.post(
        "/api/v1/datasets",
        {"name": "xy", "target": "label", "file": SimpleUploadedFile("xy.csv", csv)},
        format="multipart",
    )
    assert again.status_code == 200
    assert again.json()["sha256"] == first.json()["sha256"]
    assert first.json()["created"] is True
    assert first.json()["note"] == ""
    assert again.json()["created"] is False
    assert again.json()["note"] == f"this content is already stored as xy@{first.json()['sha256'][:12]}"
    listed = api_client.get("/api/v1/datasets").json()
    assert [d["name"] for d in listed["results"]] == ["xy"]


def test_uploading_known_content_under_another_name_says_the_name_was_not_recorded(api_client):
    csv = b"x,y,label\n1,2,a\n2,3,b\n3,4,a\n4,5,b\n"
    first = api_client.post(
        "/api/v1/datasets",
        {"name": "xy", "target": "label", "file": SimpleUploadedFile("xy.csv", csv)},
        format="multipart",
    ).json()
    renamed = api_client.post(
        "/api/v1/datasets",
        {"name": "my-xy", "target": "label", "file": SimpleUploadedFile("my.csv", csv)},
        format="multipart",
    )
    assert renamed.status_code == 200
    assert renamed.json()["name"] == "xy"
    assert renamed.json()["note"] == (
        f"this content is already stored as xy@{first['sha256'][:12]}; 'my-xy' was not recorded: "
        f"use dataset 'xy' or '{first['sha256'][:12]}'"
    )
    assert [d["name"] for d in api_client.get("/api/v1/datasets").json()["results"]] == ["xy"]


@pytest.mark.parametrize(
    ("content", "target", "field"),
    [
        (b"x,label\n", "label", "file"),
        (b"x,y\n1,2\n", "label", "target"),
        (b"x,label\n1,a\n2,b\n3,a\n4,b\nten,a\n", "label", "file"),
    ],
)
def test_bad_uploads_are_400s_naming_the_field(api_client, content, target, field):
    response = api_client.post(
        "/api/v1/datasets",
        {"name": "bad", "target": target, "file": SimpleUploadedFile("bad.csv", content)},
        format="multipart",
    )
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert not DatasetVersion.objects.exists()


def test_fifty_megabytes_of_garbage_is_a_400(api_client):
    garbage = bytes(range(256)) * (50 * 1024 * 1024 // 256)
    response = api_client.post(
        "/api/v1/datasets",
        {"name": "junk", "target": "label", "file": SimpleUploadedFile("junk.csv", garbage)},
        format="multipart",
    )
    assert response.status_code == 400
    assert response.json()["field"] == "file"
    assert not DatasetVersion.objects.exists()


def test_a_missing_file_field_is_a_400(api_client):
    response = api_client.post("/api/v1/datasets", {"name": "x", "target": "label"}, format="multipart")
    assert response.status_code == 400
    assert response.json()["field"] == "file"


def test_authentication_is_required():
    client = APIClient()
    response = client.get("/api/v1/runs")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert "credentials" in response.json()["error"]
    bad_token = client.get("/api/v1/runs", HTTP_AUTHORIZATION="Token not-a-real-token")
    assert bad_token.status_code == 401


def test_token_authentication(user):
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=user)
    client = APIClient(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert client.get("/api/v1/experiments").status_code == 200


def test_openapi_schema_and_docs(api_client):
    schema = api_client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/runs/{run_id}/metrics/{key}" in schema.content
    assert api_client.get("/api/docs/").status_code == 200
