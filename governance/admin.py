from django.contrib import admin

from governance.models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """Read-only: entries are written by services, never by hand."""

    list_display = ["created_at", "actor_name", "action", "object_type", "object_repr", "reason"]
    list_filter = ["action", "object_type", "actor_name"]
    search_fields = ["object_repr", "object_id", "reason", "actor_name"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
