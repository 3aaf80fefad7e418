"""REST API of the CRM connector: one customer's segment on request, refresh jobs, the settings.

POST /crm_segment_update?customer_id=... (the specification's form) and
POST /api/v1/crm/customers/{customer_id}/segment are the same operation.
"""

from django.urls import path
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from core.permissions import require_perm
from serving.crm import selectors, services
from serving.crm.connectors import connector_get
from serving.crm.models import CrmRefresh

CanViewCustomers = require_perm("serving.view_customer", "serving.update_segment", doing="read the CRM's customers")
CanViewRefreshes = require_perm("serving.view_crmrefresh", "serving.refresh_segments", doing="read segment refreshes")
CanViewSettings = require_perm("serving.view_crmsettings", "serving.change_crmsettings", doing="read the CRM settings")


class PredictionOutput(serializers.Serializer):
    label = serializers.CharField()
    probabilities = serializers.DictField(child=serializers.FloatField())
    confidence = serializers.FloatField()


class SegmentUpdateOutput(serializers.Serializer):
    customer_id = serializers.CharField()
    features = serializers.DictField()
    model = serializers.CharField()
    version = serializers.IntegerField()
    deployment = serializers.CharField(help_text="primary or canary: which deployment predicted")
    prediction = PredictionOutput()
    segment_before = serializers.CharField()
    segment_after = serializers.CharField()
    status = serializers.CharField(help_text="updated, or unchanged when the segment was already right")
    request_id = serializers.CharField()


def _update_body(update):
    return SegmentUpdateOutput(
        {
            "customer_id": update.customer_id,
            "features": update.features,
            "model": update.model_name,
            "version": update.model_version,
            "deployment": update.served_by,
            "prediction": {
                "label": update.prediction,
                "probabilities": update.probabilities,
                "confidence": update.confidence,
            },
            "segment_before": update.segment_before,
            "segment_after": update.segment_after,
            "status": update.status,
            "request_id": update.request_id,
        }
    ).data


class CustomerSegmentUpdateApi(APIView):
    """Look the customer up in the CRM, predict with the model in Production, write the segment back.

    404 unknown customer; 422 naming a feature the record lacks or has the wrong type (nothing written);
    503 when the CRM is unreachable after the retries (segment unchanged); 409 with no model in Production.
    """

    @extend_schema(request=None, responses=SegmentUpdateOutput)
    def post(self, request, customer_id):
        update = services.customer_segment_update(
            customer_id=customer_id, by=request.user, request_id=request.request_id
        )
        return Response(_update_body(update))


class CrmSegmentUpdateApi(CustomerSegmentUpdateApi):
    """POST /crm_segment_update?customer_id=CUST_TEST_007: the specification's form of the same update."""

    @extend_schema(
        request=None,
        responses=SegmentUpdateOutput,
        parameters=[OpenApiParameter("customer_id", str, required=True, description="The CRM's customer id")],
    )
    def post(self, request):
        return super().post(request, request.query_params.get("customer_id", ""))


class SegmentChangeOutput(serializers.Serializer):
    segment_before = serializers.CharField()
    segment_after = serializers.CharField()
    model = serializers.CharField(source="model_name")
    version = serializers.IntegerField(source="model_version")
    deployment = serializers.CharField(source="deployment_mode")
    prediction = serializers.CharField()
    confidence = serializers.FloatField()
    request_id = serializers.CharField()
    row = serializers.IntegerField()
    status = serializers.CharField()
    by = serializers.CharField(source="actor_name")
    refresh = serializers.IntegerField(source="refresh_id", allow_null=True)
    created_at = serializers.DateTimeField()


class CustomerOutput(serializers.Serializer):
    customer_id = serializers.CharField()
    features = serializers.DictField()
    segment = serializers.CharField()
    history = SegmentChangeOutput(many=True)


class CustomerDetailApi(APIView):
    """A customer as the CRM has it now, with the segment changes we made."""

    permission_classes = [CanViewCustomers]

    @extend_schema(responses=CustomerOutput)
    def get(self, request, customer_id):
        record = connector_get().customer_get(customer_id)
        history = selectors.segment_history(customer_id=customer_id)
        return Response(
            CustomerOutput(
                {
                    "customer_id": record.customer_id,
                    "features": record.features,
                    "segment": record.segment,
                    "history": history,
                }
            ).data
        )


class RefreshOutput(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    scope = serializers.CharField()
    scope_note = serializers.CharField()
    since = serializers.DateTimeField(allow_null=True)
    model = serializers.CharField(source="model_name")
    version = serializers.IntegerField(source="model_version", allow_null=True)
    total = serializers.IntegerField(allow_null=True)
    processed = serializers.IntegerField()
    updated = serializers.IntegerField()
    unchanged = serializers.IntegerField()
    failed = serializers.IntegerField()
    failures = serializers.JSONField()
    progress = serializers.FloatField()
    cursor = serializers.CharField()
    attempts = serializers.IntegerField()
    by = serializers.CharField(source="actor_name")
    error = serializers.CharField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)


class RefreshListCreateApi(APIView):
    """List refreshes, or start one (202): every customer ("all") or those changed since the last ("changed")."""

    class StartInput(serializers.Serializer):
        scope = serializers.ChoiceField(choices=CrmRefresh.Scope.values, default=CrmRefresh.Scope.CHANGED)

    def get_permissions(self):
        return super().get_permissions() if self.request.method == "POST" else [CanViewRefreshes()]

    @extend_schema(responses=RefreshOutput(many=True))
    def get(self, request):
        return Response(RefreshOutput(selectors.refresh_list()[:100], many=True).data)

    @extend_schema(request=StartInput, responses={202: RefreshOutput})
    def post(self, request):
        serializer = self.StartInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        refresh = services.crm_refresh_start(scope=serializer.validated_data["scope"], by=request.user)
        return Response(RefreshOutput(refresh).data, status=status.HTTP_202_ACCEPTED)


class RefreshDetailApi(APIView):
    permission_classes = [CanViewRefreshes]

    @extend_schema(responses=RefreshOutput)
    def get(self, request, refresh_id):
        return Response(RefreshOutput(selectors.refresh_get(refresh_id=refresh_id)).data)


class RefreshStopApi(APIView):
    """Stop a refresh after the chunk it is writing; resume it later from there."""

    class StopInput(serializers.Serializer):
        reason = serializers.CharField(required=False, default="", allow_blank=True, max_length=5000)

    @extend_schema(request=StopInput, responses=RefreshOutput)
    def post(self, request, refresh_id):
        serializer = self.StopInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        refresh = services.crm_refresh_stop(refresh_id=refresh_id, by=request.user, **serializer.validated_data)
        return Response(RefreshOutput(refresh).data)


class RefreshResumeApi(APIView):
    """Queue a stopped or failed refresh again (202); it goes on from the last customer it finished."""

    @extend_schema(request=None, responses={202: RefreshOutput})
    def post(self, request, refresh_id):
        refresh = services.crm_refresh_resume(refresh_id=refresh_id, by=request.user)
        return Response(RefreshOutput(refresh).data, status=status.HTTP_202_ACCEPTED)


class SettingsOutput(serializers.Serializer):
    model_name = serializers.CharField()
    mapping = serializers.JSONField()
    crm = serializers.SerializerMethodField()
    updated_at = serializers.DateTimeField(allow_null=True)
    updated_by = serializers.CharField(source="updated_by.username", allow_null=True, default=None)

    def get_crm(self, obj) -> str:
        return connector_get().kind


class SettingsApi(APIView):
    """Which model drives segments and how a prediction becomes one; PUT changes them (422 naming the
    rule when the mapping refers to a class the model does not have)."""

    class SettingsInput(serializers.Serializer):
        model_name = serializers.CharField(required=False, max_length=100)
        mapping = serializers.JSONField(required=False)
        reason = serializers.CharField(required=False, default="", allow_blank=True, max_length=5000)

    def get_permissions(self):
        return super().get_permissions() if self.request.method == "PUT" else [CanViewSettings()]

    @extend_schema(responses=SettingsOutput)
    def get(self, request):
        return Response(SettingsOutput(selectors.crm_settings_get()).data)

    @extend_schema(request=SettingsInput, responses=SettingsOutput)
    def put(self, request):
        serializer = self.SettingsInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        row = services.crm_settings_update(by=request.user, **serializer.validated_data)
        return Response(SettingsOutput(row).data)


urlpatterns = [
    path("customers/<str:customer_id>", CustomerDetailApi.as_view(), name="crm-customer"),
    path("customers/<str:customer_id>/segment", CustomerSegmentUpdateApi.as_view(), name="crm-customer-segment"),
    path("refreshes", RefreshListCreateApi.as_view(), name="crm-refresh-list"),
    path("refreshes/<int:refresh_id>", RefreshDetailApi.as_view(), name="crm-refresh-detail"),
    path("refreshes/<int:refresh_id>/stop", RefreshStopApi.as_view(), name="crm-refresh-stop"),
    path("refreshes/<int:refresh_id>/resume", RefreshResumeApi.as_view(), name="crm-refresh-resume"),
    path("settings", SettingsApi.as_view(), name="crm-settings"),
]
root_urlpatterns = [
    path("crm_segment_update", CrmSegmentUpdateApi.as_view(), name="crm-segment-update"),
]
