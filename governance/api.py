"""REST API of the governance app: the audit log, for auditors and admins."""

from django.urls import path
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.generics import ListAPIView

from core.permissions import require_perm
from governance import selectors

_FILTERS = ("actor", "action", "object_type", "object_id", "since", "until", "q")


class AuditEntryOutput(serializers.Serializer):
    id = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    actor = serializers.CharField(source="actor_name")
    action = serializers.CharField()
    object_type = serializers.CharField()
    object_id = serializers.CharField()
    object_repr = serializers.CharField()
    before = serializers.JSONField()
    after = serializers.JSONField()
    reason = serializers.CharField()
    request_id = serializers.CharField()
    ip_address = serializers.CharField(allow_null=True)
    prev_hash = serializers.CharField()
    entry_hash = serializers.CharField()


@extend_schema(parameters=[OpenApiParameter(name, str, description="filter") for name in _FILTERS])
class AuditLogApi(ListAPIView):
    """The audit trail, newest first: filter by actor, action, object_type, object_id, since, until; q searches."""

    serializer_class = AuditEntryOutput
    permission_classes = [require_perm("governance.view_auditentry", doing="read the audit log")]

    def get_queryset(self):
        return selectors.audit_entry_list(
            **{name: self.request.query_params.get(name) for name in _FILTERS if self.request.query_params.get(name)}
        )


urlpatterns = [path("audit-log", AuditLogApi.as_view(), name="audit-log")]
