"""REST API of the registry: models, versions, promotion requests, rollback. One thin view per operation."""

from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import InvalidInput
from core.permissions import require_perm
from registry import selectors, services
from registry.models import PromotionRequest

CanViewRegistry = require_perm("registry.view_modelversion", doing="read the registry")


class ComplianceOutput(serializers.Serializer):
    id = serializers.IntegerField()
    compliant = serializers.BooleanField()
    score = serializers.FloatField()
    results = serializers.JSONField()
    created_at = serializers.DateTimeField()


class ModelOutput(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
    owner = serializers.CharField(source="owner.username", allow_null=True, default=None)
    intended_use = serializers.CharField()
    tags = serializers.DictField()
    metric_thresholds = serializers.DictField()
    version_count = serializers.IntegerField()
    production_version = serializers.IntegerField(allow_null=True)
    staging_version = serializers.IntegerField(allow_null=True)
    mlflow_synced_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()


class VersionOutput(serializers.Serializer):
    model = serializers.CharField(source="model.name")
    version = serializers.IntegerField()
    stage = serializers.CharField()
    description = serializers.CharField()
    run_id = serializers.IntegerField()
    dataset = serializers.CharField()
    metrics = serializers.DictField()
    artifact_path = serializers.CharField()
    artifact_sha256 = serializers.CharField()
    signature = serializers.JSONField()
    breaking_change = serializers.BooleanField()
    signature_changes = serializers.ListField(child=serializers.CharField())
    stage_changed_at = serializers.DateTimeField(allow_null=True)
    mlflow_version = serializers.CharField()
    created_by = serializers.CharField(source="created_by.username", allow_null=True, default=None)
    created_at = serializers.DateTimeField()


class VersionDetailOutput(VersionOutput):
    reference_stats = serializers.JSONField()
    compliance = serializers.SerializerMethodField()

    def get_compliance(self, version) -> dict | None:
        evaluation = selectors.version_compliance_latest(version=version)
        return ComplianceOutput(evaluation).data if evaluation else None


class PromotionRequestOutput(serializers.Serializer):
    id = serializers.IntegerField()
    model = serializers.CharField(source="version.model.name")
    version = serializers.IntegerField(source="version.version")
    kind = serializers.CharField()
    from_stage = serializers.CharField()
    to_stage = serializers.CharField()
    environment = serializers.CharField()
    traffic_percent = serializers.FloatField(allow_null=True)
    breaking_change = serializers.BooleanField(source="version.breaking_change")
    signature_changes = serializers.ListField(source="version.signature_changes", child=serializers.CharField())
    reason = serializers.CharField()
    status = serializers.CharField()
    requested_by = serializers.CharField(source="requested_by.username")
    requested_at = serializers.DateTimeField()
    decided_by = serializers.CharField(source="decided_by.username", allow_null=True, default=None)
    decided_at = serializers.DateTimeField(allow_null=True)
    comment = serializers.CharField()
    override_justification = serializers.CharField()
    compliance = ComplianceOutput(allow_null=True)


class ModelListApi(APIView):
    permission_classes = [CanViewRegistry]

    @extend_schema(responses=ModelOutput(many=True))
    def get(self, request):
        return Response(ModelOutput(selectors.model_list(), many=True).data)


class ModelDetailApi(APIView):
    permission_classes = [CanViewRegistry]

    @extend_schema(responses=ModelOutput)
    def get(self, request, name):
        return Response(ModelOutput(selectors.model_get(name=name)).data)


class VersionListCreateApi(APIView):
    """List a model's versions, or register a finished run as its next version (the model is created if new)."""

    class RegisterInput(serializers.Serializer):
        run_id = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
        description = serializers.CharField(required=False, default="", allow_blank=True, max_length=5000)
        breaking_change = serializers.BooleanField(
            required=False, default=False, help_text="Register it although its signature differs (audited)."
        )

    def get_permissions(self):
        return [IsAuthenticated()] if self.request.method == "POST" else [CanViewRegistry()]

    @extend_schema(responses=VersionOutput(many=True))
    def get(self, request, name):
        model = selectors.model_get(name=name)
        return Response(VersionOutput(selectors.model_versions(model=model), many=True).data)

    @extend_schema(request=RegisterInput, responses={201: VersionDetailOutput})
    def post(self, request, name):
        serializer = self.RegisterInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        version = services.model_version_register(model_name=name, by=request.user, **serializer.validated_data)
        return Response(VersionDetailOutput(version).data, status=status.HTTP_201_CREATED)


class VersionDetailApi(APIView):
    permission_classes = [CanViewRegistry]

    @extend_schema(responses=VersionDetailOutput)
    def get(self, request, name, version):
        return Response(VersionDetailOutput(selectors.version_get(model_name=name, version=version)).data)


class PromotionRequestCreateApi(APIView):
    """Ask for a version to move to a stage: 201 with the request, its status and the compliance result."""

    class RequestInput(serializers.Serializer):
        to_stage = serializers.CharField(max_length=32)
        reason = serializers.CharField(max_length=5000)

    @extend_schema(request=RequestInput, responses={201: PromotionRequestOutput})
    def post(self, request, name, version):
        serializer = self.RequestInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        promotion = services.promotion_request_create(
            version=selectors.version_get(model_name=name, version=version),
            by=request.user,
            **serializer.validated_data,
        )
        return Response(PromotionRequestOutput(promotion).data, status=status.HTTP_201_CREATED)


class TrafficRequestCreateApi(APIView):
    """Ask for a version to take a canary share (or a shadow copy) of an environment's traffic: 201 with the
    request and its compliance; it takes traffic once another person approves it."""

    class TrafficInput(serializers.Serializer):
        mode = serializers.ChoiceField(choices=["canary", "shadow"])
        environment = serializers.ChoiceField(choices=["production", "staging"], required=False, default="production")
        traffic_percent = serializers.FloatField(required=False, allow_null=True, default=None)
        reason = serializers.CharField(max_length=5000)

    @extend_schema(request=TrafficInput, responses={201: PromotionRequestOutput})
    def post(self, request, name, version):
        serializer = self.TrafficInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        traffic_request = services.traffic_request_create(
            version=selectors.version_get(model_name=name, version=version),
            by=request.user,
            **serializer.validated_data,
        )
        return Response(PromotionRequestOutput(traffic_request).data, status=status.HTTP_201_CREATED)


class PromotionRequestListApi(APIView):
    permission_classes = [CanViewRegistry]

    @extend_schema(responses=PromotionRequestOutput(many=True))
    def get(self, request):
        status_filter = request.query_params.get("status")
        if status_filter and status_filter not in PromotionRequest.Status.values:
            raise InvalidInput(f"must be one of {', '.join(PromotionRequest.Status.values)}", field="status")
        requests = selectors.promotion_request_list(status=status_filter, model_name=request.query_params.get("model"))
        return Response(PromotionRequestOutput(requests[:500], many=True).data)


class PromotionRequestDetailApi(APIView):
    permission_classes = [CanViewRegistry]

    @extend_schema(responses=PromotionRequestOutput)
    def get(self, request, request_id):
        return Response(PromotionRequestOutput(selectors.promotion_request_get(request_id=request_id)).data)


class PromotionApproveApi(APIView):
    """Approve a pending request (not your own); 409 if it was already decided or the version is non-compliant."""

    class ApproveInput(serializers.Serializer):
        comment = serializers.CharField(required=False, default="", allow_blank=True, max_length=5000)
        override_justification = serializers.CharField(required=False, default="", allow_blank=True, max_length=5000)

    @extend_schema(request=ApproveInput, responses=PromotionRequestOutput)
    def post(self, request, request_id):
        serializer = self.ApproveInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.promotion_request_approve(request_id=request_id, by=request.user, **serializer.validated_data)
        return Response(PromotionRequestOutput(selectors.promotion_request_get(request_id=request_id)).data)


class PromotionRejectApi(APIView):
    class RejectInput(serializers.Serializer):
        comment = serializers.CharField(max_length=5000)

    @extend_schema(request=RejectInput, responses=PromotionRequestOutput)
    def post(self, request, request_id):
        serializer = self.RejectInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.promotion_request_reject(request_id=request_id, by=request.user, **serializer.validated_data)
        return Response(PromotionRequestOutput(selectors.promotion_request_get(request_id=request_id)).data)


class RollbackApi(APIView):
    """Put the previous production version back: a rollback request for a second approver (201), or at once
    with "emergency": true for a user holding emergency_rollback (200, the version now in Production)."""

    class RollbackInput(serializers.Serializer):
        reason = serializers.CharField(max_length=5000)
        emergency = serializers.BooleanField(required=False, default=False)

    @extend_schema(request=RollbackInput, responses={201: PromotionRequestOutput, 200: VersionOutput})
    def post(self, request, name):
        serializer = self.RollbackInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = services.production_rollback(model_name=name, by=request.user, **serializer.validated_data)
        if serializer.validated_data["emergency"]:
            return Response(VersionOutput(result).data)
        return Response(PromotionRequestOutput(result).data, status=status.HTTP_201_CREATED)


urlpatterns = [
    path("models", ModelListApi.as_view(), name="model-list"),
    path("models/<str:name>", ModelDetailApi.as_view(), name="model-detail"),
    path("models/<str:name>/rollback", RollbackApi.as_view(), name="model-rollback"),
    path("models/<str:name>/versions", VersionListCreateApi.as_view(), name="model-version-list"),
    path("models/<str:name>/versions/<int:version>", VersionDetailApi.as_view(), name="model-version-detail"),
    path(
        "models/<str:name>/versions/<int:version>/promotion-requests",
        PromotionRequestCreateApi.as_view(),
        name="model-version-promotion-requests",
    ),
    path(
        "models/<str:name>/versions/<int:version>/traffic-requests",
        TrafficRequestCreateApi.as_view(),
        name="model-version-traffic-requests",
    ),
    path("promotion-requests", PromotionRequestListApi.as_view(), name="promotion-request-list"),
    path("promotion-requests/<int:request_id>", PromotionRequestDetailApi.as_view(), name="promotion-request-detail"),
    path("promotion-requests/<int:request_id>/approve", PromotionApproveApi.as_view(), name="promotion-approve"),
    path("promotion-requests/<int:request_id>/reject", PromotionRejectApi.as_view(), name="promotion-reject"),
]
