"""MLflow's scoring protocol and the Open Inference Protocol, checked against their own clients."""

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


def test_v2_health_metadata_and_infer_without_content_type(production, client):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2").json()["name"] == "mlops-site"
    metadata = client.get("/v2/models/iris-clf").json()
    assert metadata["versions"] == ["1"]
    assert [i["name"] for i in metadata["inputs"]][:4] == list(IRIS_ROW)
    assert client.get("/v2/models/iris-clf/ready").json() == {"name": "iris-clf", "ready": True}
    assert client.get("/v2/models/iris-clf/versions/1/ready").status_code == 200
    import json

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
