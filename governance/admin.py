import csv
import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.http import StreamingHttpResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.text import Truncator

from core.admin import ServiceWrittenAdmin, badge, short_time
from core.errors import ApplicationError
from governance.models import AuditEntry, ComplianceEvaluation, Policy, WebhookDelivery, WebhookSubscription
from governance.services import policy_save, webhook_redeliver, webhook_subscription_save

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


def compliance_html(evaluation):
    """A compliance evaluation as a table: each policy, its checks and whether they passed."""
    if evaluation is None:
        return "not evaluated yet (it runs when a promotion is requested)"
    summary = format_html(
        "<p>{} — score {}% — evaluated {}</p>",
        badge("compliant", "#16a34a") if evaluation.compliant else badge("NOT compliant", "#dc2626"),
        f"{evaluation.score:.0f}",
        f"{evaluation.created_at:%Y-%m-%d %H:%M}",
    )
    if not evaluation.results:
        return format_html("{}<p>No policy applies to this model.</p>", summary)
    rows = format_html_join(
        "",
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        (
            (
                result["policy"],
                result["kind"].replace("_", " "),
                "✔" if check["passed"] else "✘",
                check["detail"],
            )
            for result in evaluation.results
            for check in result["checks"]
        ),
    )
    return format_html(
        "{}<table><thead><tr><th>policy</th><th>kind</th><th>passed</th><th>check</th></tr></thead>"
        "<tbody>{}</tbody></table>",
        summary,
        rows,
    )


class _Echo:
    def write(self, value):
        return value


@admin.register(AuditEntry)
class AuditEntryAdmin(ServiceWrittenAdmin, admin.ModelAdmin):
    """Read-only: entries are written by services, never by hand. Filter, search, export, follow an object."""

    list_display = ["at", "actor_name", "action", "object_link", "reason_short", "history_link"]
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

    @admin.display(description="at", ordering="created_at")
    def at(self, entry):
        return short_time(entry.created_at)

    @admin.display(description="object")
    def object_link(self, entry):
        return format_html('<span title="{}">{}</span>', entry.object_repr, Truncator(entry.object_repr).chars(50))

    @admin.display(description="reason")
    def reason_short(self, entry):
        return format_html('<span title="{}">{}</span>', entry.reason, Truncator(entry.reason).chars(60))

    @admin.display(description="history")
    def history_link(self, entry):
        url = (
            reverse("admin:governance_auditentry_changelist")
            + "?"
            + urlencode({"object_type": entry.object_type, "object_id": entry.object_id})
        )
        return format_html('<a href="{}" title="all entries of this {}">trail</a>', url, entry.object_type)

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


@admin.register(Policy)
class PolicyAdmin(admin.ModelAdmin):
    """Policies are edited here by the team; each save is audited through the service."""

    list_display = ["name", "kind", "enabled", "model", "rules", "updated_at"]
    list_filter = ["kind", "enabled", "model"]
    search_fields = ["name", "description"]
    fieldsets = [
        (None, {"fields": ["name", "kind", "enabled", "model", "description"]}),
        ("Performance threshold", {"fields": ["min_metrics", "max_latency_ms"]}),
        ("Data quality", {"fields": ["require_validated_dataset", "min_rows", "max_null_percent"]}),
        ("Documentation", {"fields": ["required_fields"]}),
    ]

    @admin.display(description="rules")
    def rules(self, policy):
        if policy.kind == Policy.Kind.PERFORMANCE:
            parts = [f"{key} ≥ {value:g}" for key, value in policy.min_metrics.items()]
            if policy.max_latency_ms is not None:
                parts.append(f"latency ≤ {policy.max_latency_ms:g} ms")
        elif policy.kind == Policy.Kind.DATA_QUALITY:
            parts = ["dataset validated"] if policy.require_validated_dataset else []
            if policy.min_rows is not None:
                parts.append(f"≥ {policy.min_rows} rows")
            if policy.max_null_percent is not None:
                parts.append(f"≤ {policy.max_null_percent:g}% nulls per column")
        else:
            parts = [f"{field.replace('_', ' ')} filled in" for field in policy.required_fields]
        return ", ".join(parts)

    def save_model(self, request, obj, form, change):
        try:
            policy_save(policy=obj, by=request.user)
        except ApplicationError as exc:
            self.message_user(request, str(exc), messages.ERROR)

    def has_delete_permission(self, request, obj=None):
        return False  # switch a policy off with "enabled": evaluations that cite it stay readable


@admin.register(ComplianceEvaluation)
class ComplianceEvaluationAdmin(ServiceWrittenAdmin, admin.ModelAdmin):
    list_display = ["version", "compliant", "score", "evaluated_by", "created_at"]
    list_filter = ["compliant", "version__model"]
    readonly_fields = ["version", "compliant", "score", "results_table", "evaluated_by", "created_at"]
    exclude = ["results"]

    @admin.display(description="results")
    def results_table(self, evaluation):
        return compliance_html(evaluation)


class WebhookSubscriptionForm(forms.ModelForm):
    events = forms.MultipleChoiceField(
        choices=WebhookSubscription.Event.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every event.",
    )
    secret = forms.CharField(
        widget=forms.PasswordInput(render_value=True),
        help_text="Receivers check X-Signature: sha256=HMAC-SHA256(secret, body).",
    )

    class Meta:
        model = WebhookSubscription
        fields = ["name", "url", "secret", "events", "enabled"]


@admin.register(WebhookSubscription)
class WebhookSubscriptionAdmin(admin.ModelAdmin):
    form = WebhookSubscriptionForm
    list_display = ["name", "url", "event_list", "enabled", "delivered", "failed", "created_at"]
    list_filter = ["enabled"]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                delivered=Count("deliveries", filter=Q(deliveries__status=WebhookDelivery.Status.DELIVERED)),
                failed=Count("deliveries", filter=Q(deliveries__status=WebhookDelivery.Status.FAILED)),
            )
        )

    @admin.display(description="events")
    def event_list(self, subscription):
        return ", ".join(subscription.events) or "all"

    @admin.display(description="delivered", ordering="delivered")
    def delivered(self, subscription):
        return subscription.delivered

    @admin.display(description="failed", ordering="failed")
    def failed(self, subscription):
        return subscription.failed

    def save_model(self, request, obj, form, change):
        try:
            webhook_subscription_save(subscription=obj, by=request.user)
        except ApplicationError as exc:
            self.message_user(request, str(exc), messages.ERROR)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ServiceWrittenAdmin, admin.ModelAdmin):
    """Each event sent to each subscription: attempts, the receiver's answer, and a way to send it again."""

    list_display = ["created_at", "event", "subscription", "status", "attempts", "response_status", "error"]
    list_filter = ["status", "event", "subscription"]
    readonly_fields = [
        "subscription",
        "event",
        "payload_json",
        "status",
        "attempts",
        "response_status",
        "response_body",
        "error",
        "created_at",
        "last_attempt_at",
        "delivered_at",
    ]
    exclude = ["payload"]
    actions = ["redeliver"]

    @admin.display(description="payload")
    def payload_json(self, delivery):
        return format_html("<pre>{}</pre>", json.dumps(delivery.payload, indent=2, sort_keys=True))

    @admin.action(description="Redeliver selected deliveries")
    def redeliver(self, request, queryset):
        try:
            count = webhook_redeliver(delivery_ids=list(queryset.values_list("pk", flat=True)), by=request.user)
        except ApplicationError as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            self.message_user(request, f"{count} deliveries queued again.")
