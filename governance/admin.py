import csv
import json

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import StreamingHttpResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from governance.models import AuditEntry

_CSV_COLUMNS = [
    "id",
    "created_at",
    "actor_name",
    "action",
    "object_type",
    "object_id",
    "object_repr",
    "before",
    "after",
    "reason",
    "request_id",
    "ip_address",
    "prev_hash",
    "entry_hash",
]


class _Echo:
    def write(self, value):
        return value


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """Read-only: entries are written by services, never by hand. Filter, search, export, follow an object."""

    list_display = ["created_at", "actor_name", "action", "object_type", "object_link", "reason", "history_link"]
    list_filter = ["action", "object_type", "actor_name", "created_at"]
    search_fields = ["object_repr", "object_id", "reason", "actor_name", "request_id"]
    date_hierarchy = "created_at"
    change_list_template = "admin/governance/auditentry/change_list.html"
    readonly_fields = [
        "created_at",
        "actor",
        "actor_name",
        "action",
        "object_type",
        "object_id",
        "object_repr",
        "before_json",
        "after_json",
        "reason",
        "request_id",
        "ip_address",
        "prev_hash",
        "entry_hash",
    ]
    exclude = ["before", "after"]

    @admin.display(description="object")
    def object_link(self, entry):
        return entry.object_repr

    @admin.display(description="history")
    def history_link(self, entry):
        url = (
            reverse("admin:governance_auditentry_changelist")
            + "?"
            + urlencode({"object_type": entry.object_type, "object_id": entry.object_id})
        )
        return format_html('<a href="{}">all entries of this object</a>', url)

    @admin.display(description="before")
    def before_json(self, entry):
        return format_html("<pre>{}</pre>", json.dumps(entry.before, indent=2, sort_keys=True))

    @admin.display(description="after")
    def after_json(self, entry):
        return format_html("<pre>{}</pre>", json.dumps(entry.after, indent=2, sort_keys=True))

    def lookup_allowed(self, lookup, value, request=None):
        return lookup in ("object_type", "object_id") or super().lookup_allowed(lookup, value, request)

    def get_urls(self):
        return [
            path("export.csv", self.admin_site.admin_view(self.export_csv), name="governance_auditentry_export"),
            *super().get_urls(),
        ]

    def export_csv(self, request):
        """The entries the changelist shows under its current filters and search, as CSV."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        entries = self.get_changelist_instance(request).get_queryset(request).order_by("id")
        writer = csv.writer(_Echo())

        def rows():
            yield writer.writerow(_CSV_COLUMNS)
            for entry in entries.iterator(chunk_size=2000):
                values = [getattr(entry, column) for column in _CSV_COLUMNS]
                values[_CSV_COLUMNS.index("before")] = json.dumps(entry.before, sort_keys=True)
                values[_CSV_COLUMNS.index("after")] = json.dumps(entry.after, sort_keys=True)
                values[_CSV_COLUMNS.index("created_at")] = entry.created_at.isoformat()
                yield writer.writerow(values)

        response = StreamingHttpResponse(rows(), content_type="text/csv")
        response["Content-Disposition"] = 'attachment; filename="audit-log.csv"'
        return response

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
