"""The prediction APIs: ours, MLflow's scoring protocol and the Open Inference Protocol v2.

All three call serving.predict.predict; they differ only in how a request and an answer look.
"""

import json
import time
import uuid

import orjson
from django.conf import settings
from django.urls import path
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import ParseError
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from core.auth import CachedTokenAuthentication
from core.errors import ApplicationError, InvalidInput
from core.parsers import nul_free
from serving import services
from serving.access import PredictionRateThrottle
from serving.predict import Prediction, RequestKind, error_logged, predict
from serving.runtime import runtime


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON (send null for a missing value)")


def body_length_check(length):
    """InvalidInput if a body of `length` bytes is over SERVING_MAX_BODY_BYTES."""
    limit = settings.SERVING_MAX_BODY_BYTES
    if length > limit:
        raise InvalidInput(f"the body has {length} bytes; the limit is {limit}", field="body")


def body_checked(request):
    """The raw body, refused before it is read when its declared length is over the limit."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    body_length_check(declared)
    raw = request.body
    body_length_check(len(raw))
    return raw


def json_loads(raw, *, field="body"):
    """JSON from bytes, refusing NaN/Infinity constants (JSON has none), naming `field` when malformed.

    orjson reads a 1,000-row body in a third of the json module's time; what it refuses (malformed
    JSON, integers past 64 bits, lone surrogates, deep nesting) is read again by the json module, so
    every error and every accepted body stays as it was."""
    try:
        value = orjson.loads(raw or b"null")
    except orjson.JSONDecodeError:
        try:
            value = json.loads(raw or b"null", parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"malformed JSON: {exc}", field=field) from None
        except RecursionError:
            raise InvalidInput("nested too deeply", field=field) from None
    if raw and b"\\u0000" in raw:  # rare: only then is the body walked (the log's jsonb would refuse the whole batch)
        try:
            nul_free(value, field)
        except ParseError as exc:
            raise InvalidInput(str(exc.detail), field=field) from None
    return value


def json_body(request):
    """The request body as JSON, whatever the Content-Type says (OIP clients send none)."""
    return json_loads(body_checked(request))


class BodyLeftUnread(BaseParser):
    """Stands in for DRF's parsing: the body is read once, by json_body, whatever the Content-Type.

    DRF still asks for request.POST when it checks a signed-in session's CSRF token (the token then
    comes from the X-CSRFToken header, as browsers and Swagger UI send it); this answers {} without
    touching the stream, where having no parser at all answered 415."""

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        return {}


class FastJSONRenderer(JSONRenderer):
    """DRF's JSONRenderer output (compact, UTF-8) written by orjson: 0.3 ms instead of 7.9 for 1,000 rows."""

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if data is None:
            return b""
        return orjson.dumps(data)


class JsonOnly(BaseContentNegotiation):
    """Predictions answer JSON whatever the Accept header says; negotiating would cost more than predicting."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type

    def select_parser(self, request, parsers):
        return parsers[0]


def prediction_request_id(given):
    """A prediction's id is unique: the log's rows and the feedback sent for them are found by it, so a
    client's (or proxy's) X-Request-ID, which may be reused, is kept only as its prefix."""
    return f"{given[:51]}.{uuid.uuid4().hex[:12]}"


class PredictionApiView(APIView):
    """Token auth unless SERVING_REQUIRE_AUTH is off; throttled per token (or per address) at SERVING_THROTTLE_RATE."""

    content_negotiation_class = JsonOnly
    renderer_classes = [FastJSONRenderer]
    authentication_classes = [CachedTokenAuthentication, SessionAuthentication]
    throttle_classes = [PredictionRateThrottle]
    parser_classes = [BodyLeftUnread]  # the body is read by json_body, with no Content-Type needed

    def get_permissions(self):
        return [IsAuthenticated() if settings.SERVING_REQUIRE_AUTH else AllowAny()]

    def handle_exception(self, exc):
        if isinstance(exc, ApplicationError) and getattr(self, "_model_name", None):
            error_logged(
                model_name=self._model_name,
                request_id=self.request.request_id,
                error=str(exc),
                latency_ms=(time.perf_counter() - self._started) * 1000,
            )
        return super().handle_exception(exc)

    def initial(self, request, *args, **kwargs):
        self._started = time.perf_counter()
        self._model_name = kwargs.get("name")
        if "HTTP_X_REQUEST_ID" in request.META:
            request._request.request_id = prediction_request_id(request._request.request_id)
        super().initial(request, *args, **kwargs)

    def _predict(self, request, *, name, payload, kind, version=None, environment="production") -> Prediction:
        return predict(
            model_name=name,
            payload=payload,
            kind=kind,
            version=version,
            environment=environment,
            request_id=request.request_id,
            by=request.user,
        )


class OpenPredictionView(PredictionApiView):
    """Health and readiness probes: no token, no throttle (load balancers call them constantly)."""

    throttle_classes = []

    def get_permissions(self):
        return [AllowAny()]


def native_payload(body):
    """(rows, their layout) of our API's body: {"instances": [{...}]} or {"inputs": [[...]]}."""
    if not isinstance(body, dict):
        raise InvalidInput('must be {"instances": [{...}, ...]} or {"inputs": [[...], ...]}', field="body")
    if "instances" in body:
        return body["instances"], RequestKind.RECORDS
    if "inputs" in body:
        return body["inputs"], RequestKind.ROWS
    raise InvalidInput(
        'give "instances" (objects of feature: value) or "inputs" (rows in signature order)', field="body"
    )


def native_answer(name, prediction):
    """Our API's answer: the version that answered and, per row, the label, probabilities and confidence."""
    classes = prediction.model.classes
    probabilities = prediction.probabilities
    confidences = probabilities.max(axis=1).tolist()
    return {
        "model": name,
        "version": prediction.model.version,
        "deployment": prediction.served_by.value,
        "request_id": prediction.request_id,
        "latency_ms": round(prediction.latency_ms, 3),
        "predictions": [
            {"label": label, "probabilities": dict(zip(classes, probs)), "confidence": confidence}  # noqa: B905
            for label, probs, confidence in zip(prediction.labels, probabilities.tolist(), confidences)  # noqa: B905
        ],
    }


# Raw schemas where a serializer cannot say it: one of the row layouts is required (`{}` is refused).
_ROWS = {"type": "array", "minItems": 1, "items": {"type": "array", "items": {}}}
_RECORDS = {"type": "array", "minItems": 1, "items": {"type": "object", "additionalProperties": {}}}
_PREDICT_REQUEST = {
    "application/json": {
        "type": "object",
        "description": '"instances" (objects of feature: value) or "inputs" (rows in signature order); '
        'with both, "instances" is read.',
        "properties": {"instances": _RECORDS, "inputs": _ROWS},
        "anyOf": [{"required": ["instances"]}, {"required": ["inputs"]}],
    }
}
_PREDICT_RESPONSE = inline_serializer(
    "PredictResponse",
    {
        "model": serializers.CharField(),
        "version": serializers.IntegerField(),
        "deployment": serializers.CharField(),
        "request_id": serializers.CharField(),
        "latency_ms": serializers.FloatField(),
        "predictions": serializers.ListField(child=serializers.DictField()),
    },
)


class PredictApi(PredictionApiView):
    """Predict with the version deployed in production (or ?environment=staging), or a given version."""

    @extend_schema(request=_PREDICT_REQUEST, responses=_PREDICT_RESPONSE)
    def post(self, request, name, version=None):
        payload, kind = native_payload(json_body(request))
        # Parsing the query string costs a QueryDict; most requests have none.
        environment = (
            request.query_params.get("environment", "production") if request.META.get("QUERY_STRING") else "production"
        )
        if environment not in ("production", "staging"):
            raise InvalidInput("must be production or staging", field="environment")
        prediction = self._predict(
            request, name=name, payload=payload, kind=kind, version=version, environment=environment
        )
        return Response(native_answer(name, prediction))


class DefaultPredictApi(PredictApi):
    """POST /predict: the seed's short form, for the model named by SERVING_DEFAULT_MODEL."""

    @extend_schema(request=_PREDICT_REQUEST, responses=_PREDICT_RESPONSE)
    def post(self, request):
        self._model_name = settings.SERVING_DEFAULT_MODEL
        return super().post(request, settings.SERVING_DEFAULT_MODEL)


class HealthApi(OpenPredictionView):
    """GET /health: is the default model loaded, and which version answers."""

    @extend_schema(
        responses=inline_serializer(
            "Health",
            {
                "status": serializers.CharField(),
                "model_loaded": serializers.BooleanField(),
                "model": serializers.CharField(),
                "version": serializers.IntegerField(allow_null=True),
                "serving_form": serializers.CharField(allow_null=True),
                "error": serializers.CharField(),
            },
        )
    )
    def get(self, request):
        name = settings.SERVING_DEFAULT_MODEL
        try:
            route = runtime.route(name)
        except ApplicationError as exc:
            body = {
                "status": "unavailable",
                "model_loaded": False,
                "model": name,
                "version": None,
                "serving_form": None,
                "error": exc.message,
            }
            return Response(body, status=503)
        return Response(
            {
                "status": "degraded" if route.error else "ok",
                "model_loaded": True,
                "model": name,
                "version": route.primary.version,
                "serving_form": route.primary.form,
                "error": route.error,
            }
        )


class InvocationsApi(PredictionApiView):
    """MLflow's scoring protocol: dataframe_split, dataframe_records, instances or inputs → {"predictions": [...]}."""

    @extend_schema(
        request={
            "application/json": {
                "type": "object",
                "description": "Exactly one of MLflow's input formats.",
                "oneOf": [
                    {
                        "properties": {
                            "dataframe_split": {
                                "type": "object",
                                "properties": {
                                    "columns": {"type": "array", "items": {"type": "string"}},
                                    "data": _ROWS,
                                },
                                "required": ["columns", "data"],
                            }
                        },
                        "required": ["dataframe_split"],
                        "additionalProperties": False,
                    },
                    {
                        "properties": {"dataframe_records": _RECORDS},
                        "required": ["dataframe_records"],
                        "additionalProperties": False,
                    },
                    {
                        "properties": {"instances": {"oneOf": [_RECORDS, _ROWS]}},
                        "required": ["instances"],
                        "additionalProperties": False,
                    },
                    {
                        "properties": {"inputs": {"oneOf": [_ROWS, {"type": "object"}]}},
                        "required": ["inputs"],
                        "additionalProperties": False,
                    },
                ],
            }
        },
        responses=inline_serializer("InvocationsResponse", {"predictions": serializers.ListField()}),
    )
    def post(self, request, name):
        body = json_body(request)
        if not isinstance(body, dict) or len(body) != 1:
            raise InvalidInput(
                "give exactly one of dataframe_split, dataframe_records, instances, inputs", field="body"
            )
        key, value = next(iter(body.items()))
        if key == "dataframe_split":
            kind = RequestKind.SPLIT
        elif key in ("dataframe_records", "instances"):
            records = isinstance(value, list) and all(isinstance(v, dict) for v in value)
            kind = RequestKind.RECORDS if records else RequestKind.ROWS
        elif key == "inputs":
            kind = RequestKind.DICT if isinstance(value, dict) else RequestKind.ROWS
        else:
            raise InvalidInput(f"unknown format {key!r}", field=key)
        prediction = self._predict(request, name=name, payload=value, kind=kind)
        return Response({"predictions": prediction.labels})


class PingApi(OpenPredictionView):
    @extend_schema(responses={200: None})
    def get(self, request, name):
        runtime.route(name)
        return Response(None, status=200)


class FeedbackApi(APIView):
    """The true label of a logged prediction (row 0 unless "row" says otherwise), for live accuracy.

    One of the answering version's classes (422 names them otherwise); a different label for the same
    row replaces the first only with "correction": true (audited), else 409.
    """

    permission_classes = [IsAuthenticated]

    class FeedbackInput(serializers.Serializer):
        actual = serializers.JSONField()
        row = serializers.IntegerField(required=False, default=0, min_value=0, max_value=2**31 - 1)
        correction = serializers.BooleanField(required=False, default=False)

    @extend_schema(
        request=FeedbackInput,
        responses=inline_serializer(
            "FeedbackOutput",
            {
                "request_id": serializers.CharField(),
                "row": serializers.IntegerField(),
                "prediction": serializers.JSONField(),
                "actual": serializers.JSONField(),
                "correct": serializers.BooleanField(),
            },
        ),
    )
    def post(self, request, request_id):
        serializer = self.FeedbackInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        entry = services.feedback_record(request_id=request_id, by=request.user, **serializer.validated_data)
        return Response(
            {
                "request_id": entry.request_id,
                "row": entry.row,
                "prediction": entry.prediction,
                "actual": entry.actual,
                "correct": str(entry.prediction) == str(entry.actual),
            }
        )


urlpatterns = [
    path("models/<str:name>/predict", PredictApi.as_view(), name="model-predict"),
    path("models/<str:name>/versions/<int:version>/predict", PredictApi.as_view(), name="model-version-predict"),
    path("models/<str:name>/invocations", InvocationsApi.as_view(), name="model-invocations"),
    path("models/<str:name>/ping", PingApi.as_view(), name="model-ping"),
    path("predictions/<str:request_id>/feedback", FeedbackApi.as_view(), name="prediction-feedback"),
]
root_urlpatterns = [
    path("predict", DefaultPredictApi.as_view(), name="predict"),
    path("health", HealthApi.as_view(), name="health"),
]
