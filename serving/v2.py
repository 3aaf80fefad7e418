"""Open Inference Protocol v2 (KServe, Triton, MLServer clients): health, metadata and infer at /v2/.

Errors are {"error": "..."}; requests without a Content-Type are accepted, as real clients send them.
"""

import json
import struct

import numpy as np
from django.conf import settings
from django.http import HttpResponse
from django.urls import path
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response

from core.errors import ApplicationError, InvalidInput, Unprocessable
from registry.models import ModelVersion
from serving.api import OpenPredictionView, PredictionApiView, body_checked, json_loads
from serving.predict import RequestKind
from serving.runtime import runtime

_NUMERIC_TYPES = {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
_TYPE_OF_FEATURE = {False: "FP32", True: "BYTES"}
# The binary tensor extension's raw little-endian element types.
_BINARY_TYPES = {
    "BOOL": np.dtype("?"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
}
_OUTPUTS = ("label", "probabilities")


class LiveApi(OpenPredictionView):
    @extend_schema(responses=inline_serializer("V2Live", {"live": serializers.BooleanField()}))
    def get(self, request):
        return Response({"live": True})


class ReadyApi(OpenPredictionView):
    """Ready when the default model (SERVING_DEFAULT_MODEL) has a servable version loaded: its production
    version, or the last good one if that was refused. 503 with the reason otherwise, so a load balancer
    sends no traffic to a process that could only answer 409."""

    @extend_schema(
        responses=inline_serializer(
            "V2Ready",
            {
                "ready": serializers.BooleanField(),
                "model": serializers.CharField(),
                "version": serializers.IntegerField(required=False),
                "reason": serializers.CharField(),
            },
        )
    )
    def get(self, request):
        name = settings.SERVING_DEFAULT_MODEL
        try:
            route = runtime.route(name)
        except ApplicationError as exc:
            body = {"ready": False, "model": name, "reason": exc.message, "error": exc.message}
            return Response(body, status=503)
        return Response({"ready": True, "model": name, "version": route.primary.version, "reason": route.error})


class ServerMetadataApi(OpenPredictionView):
    @extend_schema(responses=inline_serializer("V2Server", {"name": serializers.CharField()}))
    def get(self, request):
        return Response({"name": "mlops-site", "version": "1.0.0", "extensions": []})


def _loaded(name, version, user):
    return runtime.version(name, version, by=user) if version is not None else runtime.route(name).primary


class ModelMetadataApi(OpenPredictionView):
    """A model's inputs and outputs. Each input is listed once: one tensor per feature, as generic OIP
    tooling builds its request from this list; the single [n, features] tensor that a model with only
    numeric features also takes is described under parameters.alternative_inputs."""

    @extend_schema(responses=inline_serializer("V2Model", {"name": serializers.CharField()}))
    def get(self, request, name, version=None):
        model = _loaded(name, version, request.user)
        n = len(model.features)
        parameters = {"classes": model.classes}
        if not any(categorical for _, categorical in model.features):
            parameters["alternative_inputs"] = [
                {
                    "name": "input-0",
                    "datatype": "FP32",
                    "shape": [-1, n],
                    "description": "instead of the inputs above: one row per prediction, features in the "
                    "order of the inputs (any name that is not a feature's)",
                }
            ]
        return Response(
            {
                "name": name,
                "versions": [str(model.version)],
                "platform": "onnxruntime" if model.form == ModelVersion.ServingForm.ONNX else "scikit-learn",
                "inputs": [
                    {"name": feature, "datatype": _TYPE_OF_FEATURE[categorical], "shape": [-1, 1]}
                    for feature, categorical in model.features
                ],
                "outputs": [
                    {"name": "label", "datatype": "BYTES", "shape": [-1]},
                    {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(model.classes)]},
                ],
                "parameters": parameters,
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


def _bytes_elements(raw, where):
    """BYTES in the binary extension: each element is a 4-byte little-endian length, then its bytes."""
    elements, offset, end = [], 0, len(raw)
    while offset < end:
        if offset + 4 > end:
            raise InvalidInput("BYTES data ends inside an element's length", field=where)
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > end:
            raise InvalidInput("BYTES data ends inside an element", field=where)
        try:
            elements.append(bytes(raw[offset : offset + length]).decode())
        except UnicodeDecodeError:
            raise InvalidInput("BYTES elements must be UTF-8 text", field=where) from None
        offset += length
    return elements


def _parameters(holder, where):
    parameters = holder.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidInput("parameters must be an object", field=f"{where}.parameters")
    return parameters


def _tensor_values(tensor, index, binary):
    """(shape, datatype, values, name) of an input tensor: values a list (JSON data) or a numpy array (its
    bytes after the JSON header, when parameters.binary_data_size says how many); `binary` is the unread
    rest of the body, from which this tensor's bytes are taken."""
    where = f"inputs[{index}]"
    if not isinstance(tensor, dict):
        raise InvalidInput("must be an object with name, shape, datatype and data", field=where)
    size = _parameters(tensor, where).get("binary_data_size")
    for key in ("name", "shape", "datatype") if size is not None else ("name", "shape", "datatype", "data"):
        if key not in tensor:
            raise InvalidInput(f"is missing {key!r}", field=where)
    shape, datatype = tensor["shape"], tensor["datatype"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise InvalidInput("shape must be a list of non-negative integers", field=f"{where}.shape")
    if datatype not in _NUMERIC_TYPES | {"BYTES", "BOOL"}:
        raise InvalidInput(f"unsupported datatype {datatype!r}", field=f"{where}.datatype")
    expected = int(np.prod(shape)) if shape else 1
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidInput("binary_data_size must be a non-negative integer", field=f"{where}.parameters")
        if size > len(binary):
            raise InvalidInput(
                f"binary_data_size is {size} but only {len(binary)} bytes follow", field=f"{where}.parameters"
            )
        raw, binary = binary[:size], binary[size:]
        if datatype == "BYTES":
            values = _bytes_elements(raw, f"{where}.data")
        else:
            dtype = _BINARY_TYPES[datatype]
            if size != expected * dtype.itemsize:
                raise InvalidInput(
                    f"has {size} bytes but shape {shape} of {datatype} needs {expected * dtype.itemsize}",
                    field=f"{where}.parameters",
                )
            values = np.frombuffer(raw, dtype=dtype)
    else:
        if not isinstance(tensor["data"], list):
            raise InvalidInput("data must be a list", field=f"{where}.data")
        values = _flatten(tensor["data"], where=f"{where}.data")
    if len(values) != expected:
        raise InvalidInput(f"has {len(values)} values but shape {shape} needs {expected}", field=f"{where}.data")
    return (shape, datatype, values, tensor["name"]), binary


def _infer_body(request):
    """(JSON header, binary rest) of an infer request: the binary tensor extension puts the JSON first,
    Inference-Header-Content-Length bytes long, and the tensors' raw bytes after it."""
    raw = body_checked(request)
    header_length = request.META.get("HTTP_INFERENCE_HEADER_CONTENT_LENGTH")
    if header_length is None:
        return json_loads(raw), b""
    try:
        length = int(header_length)
    except ValueError:
        length = -1
    if not 0 <= length <= len(raw):
        raise InvalidInput(
            f"must be the length of the JSON header, 0 to {len(raw)}", field="Inference-Header-Content-Length"
        )
    view = memoryview(raw)
    return json_loads(view[:length].tobytes()), view[length:]


def _requested_outputs(body):
    """[(output name, binary?)] the client asked for: its `outputs`, each binary if its parameters say
    binary_data, else as the request's binary_data_output says (Triton's rules); both outputs by default."""
    binary_default = bool(_parameters(body, "body").get("binary_data_output", False))
    requested = body.get("outputs")
    if requested is None:
        return [(name, binary_default) for name in _OUTPUTS]
    if not isinstance(requested, list):
        raise InvalidInput("must be a list of {name, parameters}", field="outputs")
    chosen = []
    for index, output in enumerate(requested):
        where = f"outputs[{index}]"
        if not isinstance(output, dict) or output.get("name") not in _OUTPUTS:
            raise InvalidInput(f"the outputs are {', '.join(_OUTPUTS)}", field=where)
        chosen.append((output["name"], bool(_parameters(output, where).get("binary_data", binary_default))))
    return chosen


class InferApi(PredictionApiView):
    """POST /v2/models/{name}[/versions/{v}]/infer: one tensor per feature ([n] or [n, 1]), or one [n, features]
    tensor in signature order; answers the label and probabilities tensors, echoing the request id.

    Tensors may come and go in JSON or in the binary tensor extension (tritonclient's and KServe's default)."""

    @extend_schema(
        request=inline_serializer(
            "V2InferRequest", {"id": serializers.CharField(required=False), "inputs": serializers.ListField()}
        ),
        responses=inline_serializer(
            "V2InferResponse", {"model_name": serializers.CharField(), "outputs": serializers.ListField()}
        ),
    )
    def post(self, request, name, version=None):
        body, binary = _infer_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
            raise InvalidInput('must be {"inputs": [{"name", "shape", "datatype", "data"}, ...]}', field="inputs")
        outputs = _requested_outputs(body)
        model = _loaded(name, version, request.user)
        tensors = []
        for index, tensor in enumerate(body["inputs"]):
            values, binary = _tensor_values(tensor, index, binary)
            tensors.append(values)
        if len(binary):
            raise InvalidInput(f"{len(binary)} bytes after the last binary tensor", field="inputs")
        names = [feature for feature, _ in model.features]
        if len(tensors) == 1 and tensors[0][3] not in names:
            shape, datatype, flat, _ = tensors[0]
            if len(shape) != 2 or shape[1] != len(names):
                raise Unprocessable(
                    f"one input needs shape [n, {len(names)}] (features in signature order: {', '.join(names)})",
                    field="inputs[0].shape",
                )
            if isinstance(flat, np.ndarray):  # binary: a column per feature, no Python row at all
                matrix = flat.reshape(shape)
                payload, kind = {n: matrix[:, i] for i, n in enumerate(names)}, RequestKind.COLUMNS
            else:
                payload, kind = [flat[i : i + shape[1]] for i in range(0, len(flat), shape[1])], RequestKind.ROWS
        else:
            by_name = {t[3]: t for t in tensors}
            unknown = sorted(set(by_name) - set(names))
            if unknown:
                raise Unprocessable(f"unknown input {unknown[0]!r}; the model takes {', '.join(names)}", field="inputs")
            missing = [n for n in names if n not in by_name]
            if missing:
                raise Unprocessable(f"missing input {missing[0]!r}", field="inputs")
            payload, kind = {n: by_name[n][2] for n in names}, RequestKind.DICT
        prediction = self._predict(request, name=name, payload=payload, kind=kind, version=version)
        return _infer_response(name, body, prediction, outputs)


def _infer_response(name, body, prediction, outputs):
    n, classes = len(prediction.labels), prediction.model.classes
    tensors, chunks = [], []
    for output, binary in outputs:
        if output == "label":
            tensor = {"name": "label", "shape": [n], "datatype": "BYTES"}
            if binary:
                encoded = [label.encode() for label in prediction.labels]
                chunks.append(b"".join(struct.pack("<I", len(e)) + e for e in encoded))
            else:
                tensor["data"] = prediction.labels
        else:
            tensor = {"name": "probabilities", "shape": [n, len(classes)], "datatype": "FP32"}
            if binary:
                chunks.append(np.ascontiguousarray(prediction.probabilities, dtype="<f4").tobytes())
            else:
                tensor["data"] = np.asarray(prediction.probabilities, dtype="float64").ravel().tolist()
        if binary:
            tensor["parameters"] = {"binary_data_size": len(chunks[-1])}
        tensors.append(tensor)
    response = {"model_name": name, "model_version": str(prediction.model.version), "outputs": tensors}
    if "id" in body:
        response["id"] = body["id"]
    if not chunks:
        return Response(response)
    header = json.dumps(response, separators=(",", ":")).encode()
    answer = HttpResponse(b"".join([header, *chunks]), content_type="application/octet-stream")
    answer["Inference-Header-Content-Length"] = str(len(header))
    return answer


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
