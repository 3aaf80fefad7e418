"""MLflow's scoring protocol and the Open Inference Protocol, checked against their own clients."""

import json

import pytest

from experiments.services import dataset_frame_load
from registry import services as registry_services
from tests.serving.conftest import IRIS_ROW

pytestmark = pytest.mark.django_db


@pytest.mark.mlflow
def test_invocations_answer_as_mlflow_pyfunc_does(production, client, settings):
    import mlflow

    registry_services.model_mirror_to_mlflow(model_id=production.model_id)
    mlflow.set_tracking_uri(settings.MLFLOW_TRACKING_URI)
    mlflow.set_registry_uri(settings.MLFLOW_TRACKING_URI)
    pyfunc = mlflow.pyfunc.load_model("models:/iris-clf@production")
    frame = dataset_frame_load(version=production.dataset).drop(columns=["target"]).sample(40, random_state=1)
    expected = [str(label) for label in pyfunc.predict(frame)]
    records = frame.to_dict(orient="records")
    split = {"columns": list(frame.columns), "data": frame.to_numpy().tolist()}
    bodies = [
        {"dataframe_split": split},
        {"dataframe_records": records},
        {"instances": records},
        {"inputs": {column: frame[column].tolist() for column in frame.columns}},
        {"inputs": frame.to_numpy().tolist()},
    ]
    for body in bodies:
        response = client.post("/api/v1/models/iris-clf/invocations", body, format="json")
        assert response.status_code == 200, (list(body), response.json())
        assert response.json() == {"predictions": expected}, list(body)
    assert client.get("/api/v1/models/iris-clf/ping").status_code == 200
    assert client.get("/api/v1/models/nope/ping").status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"dataframe_split": {"columns": ["a"], "data": [[1]]}}, "dataframe_split.data[0].sepal_length_cm"),
        ({"dataframe_split": {"data": "x"}}, "dataframe_split"),
        ({"tensor": []}, "tensor"),
        ({"instances": [IRIS_ROW], "inputs": []}, "body"),
        ({"inputs": {"sepal_length_cm": [1]}}, "inputs.sepal_width_cm"),
    ],
)
def test_invocations_refusals(production, client, body, field):
    response = client.post("/api/v1/models/iris-clf/invocations", body, format="json")
    assert 400 <= response.status_code < 500
    assert response.json()["field"] == field


def _v2_features(n):
    names = list(IRIS_ROW)
    return [{"name": name, "shape": [n, 1], "datatype": "FP32", "data": [[IRIS_ROW[name]]] * n} for name in names]


def test_v2_health_metadata_and_infer_without_content_type(production, client, settings):
    settings.SERVING_DEFAULT_MODEL = "iris-clf"
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True, "model": "iris-clf", "version": 1, "reason": ""}
    assert client.get("/v2").json()["name"] == "mlops-site"
    metadata = client.get("/v2/models/iris-clf").json()
    assert metadata["versions"] == ["1"]
    assert [i["name"] for i in metadata["inputs"]][:4] == list(IRIS_ROW)
    assert client.get("/v2/models/iris-clf/ready").json() == {"name": "iris-clf", "ready": True}
    assert client.get("/v2/models/iris-clf/versions/1/ready").status_code == 200

    raw = json.dumps({"id": "req-7", "inputs": _v2_features(2)})
    response = client.generic("POST", "/v2/models/iris-clf/infer", raw, content_type="")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["id"] == "req-7"
    assert body["model_version"] == "1"
    label, probabilities = body["outputs"]
    assert label["data"] == ["setosa", "setosa"]
    assert probabilities["shape"] == [2, 3]
    single = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [list(IRIS_ROW.values())]}]}
    assert client.post("/v2/models/iris-clf/versions/1/infer", single, format="json").json()["outputs"][0]["data"] == [
        "setosa"
    ]


@pytest.mark.parametrize(
    ("inputs", "status"),
    [
        ([{"name": "sepal_length_cm", "shape": [1], "datatype": "FP32"}], 400),
        ([{"name": "input-0", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}], 422),
        ([{"name": "input-0", "shape": [2, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}], 400),
        ([{"name": "x", "shape": [1, 4], "datatype": "COMPLEX", "data": [1, 2, 3, 4]}], 400),
        ([{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": ["a", "b", "c", "d"]}], 422),
        ("nope", 400),
    ],
)
def test_v2_errors_are_error_objects(production, client, inputs, status):
    response = client.post("/v2/models/iris-clf/infer", {"inputs": inputs}, format="json")
    assert response.status_code == status
    assert isinstance(response.json()["error"], str)
    assert client.post("/v2/models/unknown/infer", {"inputs": _v2_features(1)}, format="json").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_tritonclient_round_trip(live_server, register, promote, django_capture_on_commit_callbacks):
    import numpy as np
    import tritonclient.http as httpclient

    with django_capture_on_commit_callbacks(execute=True):
        promote(register())
    triton = httpclient.InferenceServerClient(url=live_server.url.removeprefix("http://"))
    assert triton.is_server_live()
    assert triton.is_model_ready("iris-clf")
    tensors = []
    for name, value in IRIS_ROW.items():
        tensor = httpclient.InferInput(name, [3, 1], "FP32")
        tensor.set_data_from_numpy(np.full((3, 1), value, dtype=np.float32), binary_data=False)
        tensors.append(tensor)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=False) for n in ("label", "probabilities")]
    result = triton.infer("iris-clf", tensors, request_id="triton-1", outputs=outputs)
    assert [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")] == ["setosa"] * 3
    assert result.as_numpy("probabilities").shape == (3, 3)
    assert result.get_response()["id"] == "triton-1"


def test_metrics_endpoint_shows_prediction_metrics(production, client):
    client.post("/api/v1/models/iris-clf/predict", {"instances": [IRIS_ROW]}, format="json")
    text = client.get("/metrics").content.decode()
    assert 'prediction_requests_total{model="iris-clf",model_version="1",status="200"}' in text
    assert "prediction_latency_seconds_bucket" in text
    assert "prediction_confidence_bucket" in text


def test_v2_metadata_lists_each_input_once_and_describes_the_single_tensor(production, client):
    metadata = client.get("/v2/models/iris-clf").json()
    assert [i["name"] for i in metadata["inputs"]] == list(IRIS_ROW)
    (alternative,) = metadata["parameters"]["alternative_inputs"]
    assert alternative["shape"] == [-1, 4]
    # A request built from the metadata alone, as generic OIP tooling builds it, is answered.
    inputs = [
        {"name": i["name"], "shape": [1, 1], "datatype": i["datatype"], "data": [IRIS_ROW[i["name"]]]}
        for i in metadata["inputs"]
    ]
    response = client.post("/v2/models/iris-clf/infer", {"inputs": inputs}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["outputs"][0]["data"] == ["setosa"]


@pytest.mark.django_db(transaction=True)
def test_tritonclient_in_its_default_binary_mode(live_server, register, promote, django_capture_on_commit_callbacks):
    """tritonclient's defaults: tensors in binary (Inference-Header-Content-Length), outputs asked in binary."""
    import numpy as np
    import tritonclient.http as httpclient

    with django_capture_on_commit_callbacks(execute=True):
        promote(register())
    triton = httpclient.InferenceServerClient(url=live_server.url.removeprefix("http://"))
    rows = np.array([list(IRIS_ROW.values()), [6.7, 3.0, 5.2, 2.3]] * 50, dtype=np.float32)
    per_feature = []
    for index, name in enumerate(IRIS_ROW):
        tensor = httpclient.InferInput(name, [100, 1], "FP32")
        tensor.set_data_from_numpy(rows[:, index : index + 1])  # binary_data=True by default
        per_feature.append(tensor)
    result = triton.infer("iris-clf", per_feature, request_id="bin-1")  # no outputs: binary_data_output
    labels = [v.decode() for v in result.as_numpy("label")]
    assert labels == ["setosa", "virginica"] * 50
    assert result.as_numpy("probabilities").shape == (100, 3)
    assert result.get_response()["id"] == "bin-1"
    single = httpclient.InferInput("input-0", [100, 4], "FP64")
    single.set_data_from_numpy(rows.astype(np.float64))
    outputs = [
        httpclient.InferRequestedOutput("probabilities"),
        httpclient.InferRequestedOutput("label", binary_data=False),
    ]
    mixed = triton.infer("iris-clf", [single], outputs=outputs)
    assert np.allclose(mixed.as_numpy("probabilities"), result.as_numpy("probabilities"))
    assert [v.decode() if isinstance(v, bytes) else v for v in mixed.as_numpy("label")] == labels
    assert [o["name"] for o in mixed.get_response()["outputs"]] == ["probabilities", "label"]


def _binary_request(header, *chunks):
    raw = json.dumps(header).encode()
    return raw + b"".join(chunks), {"HTTP_INFERENCE_HEADER_CONTENT_LENGTH": str(len(raw))}


@pytest.mark.parametrize(
    ("header", "chunks", "length", "field"),
    [
        (
            {
                "inputs": [
                    {"name": "input-0", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}
                ]
            },
            [b"\0" * 8],
            None,
            "inputs[0].parameters",
        ),
        (
            {
                "inputs": [
                    {"name": "input-0", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 8}}
                ]
            },
            [b"\0" * 8],
            None,
            "inputs[0].parameters",
        ),
        (
            {
                "inputs": [
                    {"name": "input-0", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}
                ]
            },
            [b"\0" * 20],
            None,
            "inputs",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "sepal_length_cm",
                        "shape": [1],
                        "datatype": "BYTES",
                        "parameters": {"binary_data_size": 9},
                    }
                ]
            },
            [b"\x09\0\0\0abcde"],
            None,
            "inputs[0].data",
        ),
        ({"inputs": []}, [], "999", "Inference-Header-Content-Length"),
        ({"inputs": []}, [], "x", "Inference-Header-Content-Length"),
    ],
)
def test_binary_tensor_refusals_name_the_field(production, client, header, chunks, length, field):
    raw, headers = _binary_request(header, *chunks)
    if length is not None:
        headers["HTTP_INFERENCE_HEADER_CONTENT_LENGTH"] = length
    response = client.generic("POST", "/v2/models/iris-clf/infer", raw, content_type="", **headers)
    assert 400 <= response.status_code < 500, response.content[:200]
    assert response.json()["field"] == field


def test_binary_nan_is_refused_naming_the_row(production, client):
    import numpy as np

    values = np.array([[5.1, 3.5, 1.4, 0.2], [5.1, np.nan, 1.4, 0.2]], dtype="<f4").tobytes()
    header = {
        "inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": 32}}]
    }
    raw, headers = _binary_request(header, values)
    response = client.generic("POST", "/v2/models/iris-clf/infer", raw, content_type="", **headers)
    assert response.status_code == 422
    assert response.json()["field"] == "inputs.sepal_width_cm[1]"


@pytest.mark.parametrize("url", ["/api/v1/models/iris-clf/predict", "/v2/models/iris-clf/infer"])
def test_a_signed_in_session_predicts_with_its_csrf_token(production, settings, url, scientist):
    """As a browser or Swagger UI's "Try it out" sends it: session cookie, X-CSRFToken header, JSON body."""
    from django.test import Client

    settings.SERVING_REQUIRE_AUTH = True
    browser = Client(enforce_csrf_checks=True)
    login = browser.get("/admin/login/")
    token = login.cookies["csrftoken"].value
    signed_in = browser.post(
        "/admin/login/?next=/admin/", {"username": "dana", "password": "pw-dana-1", "csrfmiddlewaretoken": token}
    )
    assert signed_in.status_code == 302, signed_in.content[:300]
    token = browser.cookies["csrftoken"].value
    body = (
        {"instances": [IRIS_ROW]}
        if "predict" in url
        else {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": list(IRIS_ROW.values())}]}
    )
    response = browser.post(url, body, content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200, response.content[:300]
    forged = browser.post(url, body, content_type="application/json")  # no token: another site's form
    assert forged.status_code == 403
    assert "CSRF" in forged.json()["error"]
