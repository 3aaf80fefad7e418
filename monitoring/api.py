"""REST API of monitoring: traffic and accuracy over time, drift of a model's traffic, drift of two datasets,
alerts."""

import datetime as dt

from django.urls import path
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import InvalidInput
from core.permissions import require_perm
from monitoring import selectors, services
from monitoring.models import Alert, AlertRule, DriftRun
from monitoring.windows import moment_parse, window_parse

# Reading monitoring is reading the registry's models; computing drift reads the prediction log.
CanViewMonitoring = require_perm("registry.view_modelversion", doing="read monitoring")


def _version_param(value):
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"must be a version number, got {value!r}", field="version") from None
    if number < 1:
        raise InvalidInput("must be 1 or more", field="version")
    return number


def _kind_param(value):
    kind = (value or DriftRun.Computation.EXACT).strip().lower()
    if kind not in DriftRun.Computation.values:
        raise InvalidInput(f"must be one of {', '.join(DriftRun.Computation.values)}", field="kind")
    return kind


class MonitoringApi(APIView):
    """Per hour or day, per version and deployment mode: requests, errors, latency, confidence, classes,
    live and estimated accuracy (from the hourly aggregates); and a per-version accuracy summary."""

    permission_classes = [CanViewMonitoring]

    @extend_schema(
        parameters=[
            OpenApiParameter("from", str, description="ISO 8601; default 24 hours ago"),
            OpenApiParameter("to", str, description="ISO 8601; default now"),
            OpenApiParameter("granularity", str, enum=["hour", "day"]),
        ],
        responses={200: dict},
    )
    def get(self, request, name):
        end = moment_parse(request.query_params["to"], field="to") if request.query_params.get("to") else None
        end = end or timezone.now()
        start = request.query_params.get("from")
        start = moment_parse(start, field="from") if start else end - dt.timedelta(hours=24)
        if end <= start:
            raise InvalidInput("must come after from", field="to")
        granularity = request.query_params.get("granularity", "hour")
        points = selectors.monitoring_series(model_name=name, start=start, end=end, granularity=granularity)
        return Response(
            {
                "model": name,
                "from": start.isoformat(),
                "to": end.isoformat(),
                "granularity": granularity,
                "accuracy": selectors.accuracy_summary(model_name=name, start=start, end=end),
                "points": points,
            }
        )


class DriftApi(APIView):
    """GET: the latest stored drift of the model for `window` (exact unless kind=sketch). POST: compute it now."""

    def get_permissions(self):
        return [CanViewMonitoring()]

    def _params(self, request):
        body = request.data if request.method == "POST" and isinstance(request.data, dict) else {}
        params = {**request.query_params.dict(), **body}
        return {
            "window": str(params.get("window") or "24h"),
            "version": _version_param(params.get("version")),
            "kind": _kind_param(params.get("kind")),
            "method": params.get("method") or "auto",
        }

    @extend_schema(
        parameters=[
            OpenApiParameter("window", str, description="1h, 24h, 7d, 30d or FROM..TO; default 24h"),
            OpenApiParameter("version", int),
            OpenApiParameter("kind", str, enum=["exact", "sketch"]),
        ],
        responses={200: dict},
    )
    def get(self, request, name):
        params = self._params(request)
        label = window_parse(params["window"]).label
        run = selectors.drift_run_latest(model_name=name, window=label, version=params["version"], kind=params["kind"])
        if run is None:
            return Response(
                {"error": f"no drift of {name} over {label} computed yet; POST to this URL computes it now"},
                status=404,
            )
        return Response(selectors.drift_run_payload(run))

    @extend_schema(request=None, responses={200: dict})
    def post(self, request, name):
        params = self._params(request)
        run = services.drift_compute_requested(
            by=request.user,
            model_name=name,
            window=window_parse(params["window"]),
            version=params["version"],
            method=params["method"],
            kind=params["kind"],
        )
        return Response(selectors.drift_run_payload(run))


class DatasetsDriftInput(serializers.Serializer):
    reference = serializers.CharField(help_text="Dataset name, NAME@sha256-prefix, or a sha256 prefix.")
    current = serializers.CharField()
    method = serializers.CharField(required=False, default="auto")


class DatasetsDriftApi(APIView):
    """Drift of every column but the target between two datasets, as Evidently 0.7 computes it."""

    permission_classes = [require_perm("experiments.view_datasetversion", doing="read datasets")]

    @extend_schema(request=DatasetsDriftInput, responses={200: dict})
    def post(self, request):
        data = request.data if isinstance(request.data, dict) else {}
        serializer = DatasetsDriftInput(data=data)
        serializer.is_valid(raise_exception=True)
        result = services.datasets_drift(**serializer.validated_data)
        return Response({"reference": result.reference, "current": result.current, **result.as_dict()})


class AlertOutput(serializers.Serializer):
    id = serializers.IntegerField()
    model = serializers.CharField()
    rule = serializers.CharField()
    kind = serializers.ChoiceField(choices=AlertRule.Kind.choices)
    state = serializers.ChoiceField(choices=Alert.State.choices)
    summary = serializers.CharField(help_text="What the last evaluation found, in one line.")
    value = serializers.FloatField(allow_null=True, help_text="The measured value the threshold bounds.")
    threshold = serializers.FloatField(allow_null=True)
    consecutive = serializers.IntegerField(help_text="Consecutive evaluations the condition held.")
    opened_at = serializers.DateTimeField()
    fired_at = serializers.DateTimeField(allow_null=True)
    resolved_at = serializers.DateTimeField(allow_null=True)
    acknowledged_at = serializers.DateTimeField(allow_null=True)
    acknowledged_by = serializers.CharField(allow_null=True)
    silenced_until = serializers.DateTimeField(allow_null=True)
    silence_reason = serializers.CharField(allow_blank=True)
    evidence = serializers.DictField(help_text="The numbers behind the summary (version, window, drift run, ...).")
    url = serializers.CharField(help_text="The alert in the admin, where it is acknowledged or silenced.")


class AlertListApi(generics.ListAPIView):
    """Alerts, newest first: those firing now with ?state=firing; pending, resolved, or all without a state."""

    permission_classes = [CanViewMonitoring]
    serializer_class = AlertOutput

    def get_queryset(self):
        return selectors.alert_list(
            state=self.request.query_params.get("state") or None,
            model_name=self.request.query_params.get("model") or None,
        )

    @extend_schema(
        parameters=[
            OpenApiParameter("state", str, enum=list(Alert.State.values), description="default: every state"),
            OpenApiParameter("model", str, description="a registered model's name"),
        ],
    )
    def get(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(
            AlertOutput([services.alert_payload(alert) for alert in page], many=True).data
        )


urlpatterns = [
    path("alerts", AlertListApi.as_view(), name="alerts"),
    path("models/<str:name>/monitoring", MonitoringApi.as_view(), name="model-monitoring"),
    path("models/<str:name>/drift", DriftApi.as_view(), name="model-drift"),
    path("drift", DatasetsDriftApi.as_view(), name="datasets-drift"),
]
