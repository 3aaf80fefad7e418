"""Open Inference Protocol v2 (KServe, Triton, MLServer clients): health, metadata and infer at /v2/.

Errors are {"error": "..."}; requests without a Content-Type are accepted, as real clients send them.
"""

import numpy as np
from django.urls import path
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response

from core.errors import InvalidInput, Unprocessable
from serving.api import OpenPredictionView, PredictionApiView, json_body
from serving.runtime import runtime

_NUMERIC_TYPES = {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
_TYPE_OF_FEATURE = {False: "FP32", True: "BYTES"}


class LiveApi(OpenPredictionView):
    @extend_schema(responses=inline_serializer("V2Live", {"live": serializers.BooleanField()}))
    def get(self, request):
        return Response({"live": True})


class ReadyApi(OpenPredictionView):
    @extend_schema(responses=inline_serializer("V2Ready", {"ready": serializers.BooleanField()}))
    def get(self, request):
        return Response({"ready": True})


class ServerMetadataApi(OpenPredictionView):
    @extend_schema(responses=inline_serializer("V2Server", {"name": serializers.CharField()}))
    def get(self, request):
        return Response({"name": "mlops-site", "version": "1.0.0", "extensions": []})


def _loaded(name, version, user):
    return runtime.version(name, version, by=user) if version is not None else runtime.route(name).primary


class ModelMetadataApi(OpenPredictionView):
    @extend_schema(responses=inline_serializer("V2Model", {"name": serializers.CharField()}))
    def get(self, request, name, version=None):
        model = _loaded(name, version, request.user)
        n = len(model.features)
        return Response(
            {
                "name": name,
                "versions": [str(model.version)],
                "platform": "onnxruntime" if model.form == "onnx" else "scikit-learn",
                "inputs": [
                    {"name": feature, "datatype": _TYPE_OF_FEATURE[categorical], "shape": [-1, 1]}
                    for feature, categorical in model.features
                ]
                + (
                    [{"name": "input-0", "datatype": "FP32", "shape": [-1, n]}]
                    if not any(c for _, c in model.features)
                    else []
                ),
                "outputs": [
                    {"name": "label", "datatype": "BYTES", "shape": [-1]},
                    {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(model.classes)]},
                ],
                "parameters": {"classes": model.classes},
            }
        )


class ModelReadyApi(OpenPredictionView):
    @extend_schema(
        responses=inline_serializer(
            "V2ModelReady", {"name": serializers.CharField(), "ready": serializers.BooleanField()}
        )
    )
    def get(self, request, name, version=None):
        _loaded(name, version, request.user)
        return Response({"name": name, "ready": True})


def _flatten(data, *, where, depth=0):
    """Row-major values of a (possibly nested) list; the protocol allows both forms."""
    if depth > 8:
        raise InvalidInput("is nested too deeply", field=where)
    flat = []
    for item in data:
        if isinstance(item, list):
            flat.extend(_flatten(item, where=where, depth=depth + 1))
        else:
            flat.append(item)
    return flat


def _tensor_values(tensor, index):
    where = f"inputs[{index}]"
    if not isinstance(tensor, dict):
        raise InvalidInput("must be an object with name, shape, datatype and data", field=where)
    for key in ("name", "shape", "datatype", "data"):
        if key not in tensor:
            raise InvalidInput(f"is missing {key!r}", field=where)
    shape, datatype, data = tensor["shape"], tensor["datatype"], tensor["data"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise InvalidInput("shape must be a list of non-negative integers", field=f"{where}.shape")
    if datatype not in _NUMERIC_TYPES | {"BYTES", "BOOL"}:
        raise InvalidInput(f"unsupported datatype {datatype!r}", field=f"{where}.datatype")
    if not isinstance(data, list):
        raise InvalidInput("data must be a list", field=f"{where}.data")
    flat = _flatten(data, where=f"{where}.data")
    expected = int(np.prod(shape)) if shape else 1
    if len(flat) != expected:
        raise InvalidInput(f"has {len(flat)} values but shape {shape} needs {expected}", field=f"{where}.data")
    return shape, datatype, flat


class InferApi(PredictionApiView):
    """POST /v2/models/{name}[/versions/{v}]/infer: one tensor per feature ([n] or [n, 1]), or one [n, features]
    tensor in signature order; answers the label and probabilities tensors, echoing the request id."""

    @extend_schema(
        request=inline_serializer(
            "V2InferRequest", {"id": serializers.CharField(required=False), "inputs": serializers.ListField()}
        ),
        responses=inline_serializer(
            "V2InferResponse", {"model_name": serializers.CharField(), "outputs": serializers.ListField()}
        ),
    )
    def post(self, request, name, version=None):
        body = json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
            raise InvalidInput('must be {"inputs": [{"name", "shape", "datatype", "data"}, ...]}', field="inputs")
        model = _loaded(name, version, request.user)
        tensors = [_tensor_values(t, i) + (t["name"],) for i, t in enumerate(body["inputs"])]
        names = [feature for feature, _ in model.features]
        if len(tensors) == 1 and tensors[0][3] not in names:
            shape, datatype, flat, _ = tensors[0]
            if len(shape) != 2 or shape[1] != len(names):
                raise Unprocessable(
                    f"one input needs shape [n, {len(names)}] (features in signature order: {', '.join(names)})",
                    field="inputs[0].shape",
                )
            rows = [flat[i : i + shape[1]] for i in range(0, len(flat), shape[1])]
            payload, kind = rows, "rows"
        else:
            by_name = {t[3]: t for t in tensors}
            unknown = sorted(set(by_name) - set(names))
            if unknown:
                raise Unprocessable(f"unknown input {unknown[0]!r}; the model takes {', '.join(names)}", field="inputs")
            missing = [n for n in names if n not in by_name]
            if missing:
                raise Unprocessable(f"missing input {missing[0]!r}", field="inputs")
            payload, kind = {n: by_name[n][2] for n in names}, "dict"
        model, labels, probabilities, *_ = self._predict(
            request, name=name, payload=payload, kind=kind, version=version
        )
        response = {
            "model_name": name,
            "model_version": str(model.version),
            "outputs": [
                {"name": "label", "shape": [len(labels)], "datatype": "BYTES", "data": labels},
                {
                    "name": "probabilities",
                    "shape": [len(labels), len(model.classes)],
                    "datatype": "FP32",
                    "data": np.asarray(probabilities, dtype="float64").ravel().tolist(),
                },
            ],
        }
        if "id" in body:
            response["id"] = body["id"]
        return Response(response)


urlpatterns = [
    path("health/live", LiveApi.as_view(), name="v2-live"),
    path("health/ready", ReadyApi.as_view(), name="v2-ready"),
    path("models/<str:name>", ModelMetadataApi.as_view(), name="v2-model"),
    path("models/<str:name>/ready", ModelReadyApi.as_view(), name="v2-model-ready"),
    path("models/<str:name>/infer", InferApi.as_view(), name="v2-infer"),
    path("models/<str:name>/versions/<int:version>", ModelMetadataApi.as_view(), name="v2-version"),
    path("models/<str:name>/versions/<int:version>/ready", ModelReadyApi.as_view(), name="v2-version-ready"),
    path("models/<str:name>/versions/<int:version>/infer", InferApi.as_view(), name="v2-version-infer"),
]
