"""Admin of the CRM connector: the embedded CRM's customers ("Update segment now"), the segment history
with its changes per day, refresh jobs (start, stop, resume, progress) and the settings."""

import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode

from core.admin import GREY, ServiceWrittenAdmin, admin_page, audit_trail_link, badge, short_time
from core.charts import PALETTE, line_chart_svg
from core.errors import ApplicationError, NotFound, Unprocessable
from registry.models import RegisteredModel
from serving.crm import selectors, services
from serving.crm.mapping import mapping_parse
from serving.crm.models import CrmRefresh, CrmSettings, Customer, SegmentChange

_REFRESH_COLORS = {
    CrmRefresh.Status.QUEUED: GREY,
    CrmRefresh.Status.RUNNING: "#2563eb",
    CrmRefresh.Status.STOPPING: "#ca8a04",
    CrmRefresh.Status.STOPPED: "#9333ea",
    CrmRefresh.Status.FINISHED: "#16a34a",
    CrmRefresh.Status.FAILED: "#dc2626",
}


def _segment_badge(segment):
    if not segment:
        return "–"
    return badge(segment, PALETTE[sum(map(ord, segment)) % len(PALETTE)])


def _history_link(customer_id, label):
    url = reverse("admin:serving_segmentchange_changelist") + "?" + urlencode({"customer_id": customer_id})
    return format_html('<a href="{}">{}</a>', url, label)


def _prediction_link(request_id, row):
    url = reverse("admin:serving_predictionlog_changelist") + "?" + urlencode({"q": request_id})
    return format_html('<a href="{}" title="the prediction log">{}</a>:{}', url, request_id[:12], row)


@admin.register(Customer)
class CustomerAdmin(ServiceWrittenAdmin, admin.ModelAdmin):
    """The embedded CRM: customers are read and their segments written only by the CRM services."""

    list_display = ["customer_id", "segment_column", "set_by_version", "segment_set_at", "segment_set_by", "summary"]
    list_filter = ["segment", "segment_version"]
    search_fields = ["customer_id"]
    actions = ["update_segment_now"]
    fields = ["customer_id", "features_table", "segment_column", "set_by_version", "segment_set_at",
              "segment_set_by", "segment_request_id", "features_updated_at", "history"]  # fmt: skip
    readonly_fields = fields

    @admin.display(description="segment", ordering="segment")
    def segment_column(self, obj):
        return _segment_badge(obj.segment)

    @admin.display(description="set by version", ordering="segment_version")
    def set_by_version(self, obj):
        return f"{obj.segment_model} v{obj.segment_version}" if obj.segment_version else "–"

    @admin.display(description="features")
    def summary(self, obj):
        if not isinstance(obj.features, dict):
            return "–"
        text = ", ".join(f"{k}={v}" for k, v in list(obj.features.items())[:3])
        return format_html('<span style="white-space:nowrap">{}{}</span>', text, " …" if len(obj.features) > 3 else "")

    @admin.display(description="features")
    def features_table(self, obj):
        if not isinstance(obj.features, dict):
            return json.dumps(obj.features)
        rows = format_html_join("", "<tr><td>{}</td><td>{}</td></tr>", sorted(obj.features.items()))
        return format_html("<table><tbody>{}</tbody></table>", rows)

    @admin.display(description="segment history")
    def history(self, obj):
        changes = selectors.segment_history(customer_id=obj.customer_id, limit=10)
        if not changes:
            return "No change yet."
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{} → {}</td><td>{} v{} ({})</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    c.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                    c.segment_before or "–",
                    c.segment_after,
                    c.model_name,
                    c.model_version,
                    c.deployment_mode,
                    _prediction_link(c.request_id, c.row),
                    c.actor_name + (f" (refresh #{c.refresh_id})" if c.refresh_id else ""),
                    c.status,
                )
                for c in changes
            ),
        )
        return format_html(
            "<table><thead><tr><th>when</th><th>segment</th><th>model</th><th>request</th><th>by</th>"
            "<th>status</th></tr></thead><tbody>{}</tbody></table><p>{}</p>",
            rows,
            _history_link(obj.customer_id, "every change of this customer"),
        )

    def has_update_segment_permission(self, request):
        return request.user.has_perm("serving.update_segment")

    @admin.action(description="Update segment now", permissions=["update_segment"])
    def update_segment_now(self, request, queryset):
        done = {services.UpdateStatus.UPDATED: [], services.UpdateStatus.UNCHANGED: []}
        for customer_id in queryset.order_by("customer_id").values_list("customer_id", flat=True)[:200]:
            try:
                update = services.customer_segment_update(
                    customer_id=customer_id, by=request.user, request_id=getattr(request, "request_id", "")
                )
            except ApplicationError as exc:
                self.message_user(request, f"{customer_id}: {exc}", messages.ERROR)
                continue
            done[update.status].append(
                f"{customer_id} {update.segment_before or '–'} → {update.segment_after}"
                if update.status == services.UpdateStatus.UPDATED
                else f"{customer_id} ({update.segment_after})"
            )
        if done[services.UpdateStatus.UPDATED]:
            self.message_user(request, "Updated: " + "; ".join(done[services.UpdateStatus.UPDATED]) + ".")
        if done[services.UpdateStatus.UNCHANGED]:
            self.message_user(request, "Already right: " + ", ".join(done[services.UpdateStatus.UNCHANGED]) + ".")


@admin.register(SegmentChange)
class SegmentChangeAdmin(ServiceWrittenAdmin, admin.ModelAdmin):
    """Every segment written to the CRM (whichever CRM), with the prediction that decided it."""

    list_display = ["at", "customer_link", "change", "version", "confidence_column", "request", "actor_name",
                    "refresh_link", "status"]  # fmt: skip
    list_filter = ["status", "segment_after", "model_name", "deployment_mode", "refresh"]
    search_fields = ["=customer_id", "=request_id"]
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in SegmentChange._meta.fields]
    change_list_template = "admin/serving/segmentchange/change_list.html"
    show_full_result_count = False

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        customer_id = request.GET.get("customer_id")
        return queryset.filter(customer_id=customer_id) if customer_id else queryset

    def lookup_allowed(self, lookup, value, request=None):
        return lookup == "customer_id" or super().lookup_allowed(lookup, value, request)

    @admin.display(description="customer", ordering="customer_id")
    def customer_link(self, obj):
        return _history_link(obj.customer_id, obj.customer_id)

    @admin.display(description="segment")
    def change(self, obj):
        return format_html(
            '<span style="white-space:nowrap">{} → {}</span>',
            _segment_badge(obj.segment_before),
            _segment_badge(obj.segment_after),
        )

    @admin.display(description="at", ordering="created_at")
    def at(self, obj):
        return short_time(obj.created_at)

    @admin.display(description="model", ordering="model_version")
    def version(self, obj):
        return format_html(
            '<span style="white-space:nowrap">{} v{}</span><span class="run-meta">{}</span>',
            obj.model_name,
            obj.model_version,
            obj.deployment_mode,
        )

    @admin.display(description="confidence", ordering="confidence")
    def confidence_column(self, obj):
        return f"{obj.prediction} {obj.confidence:.2f}"

    @admin.display(description="prediction")
    def request(self, obj):
        return _prediction_link(obj.request_id, obj.row)

    @admin.display(description="refresh", ordering="refresh")
    def refresh_link(self, obj):
        if not obj.refresh_id:
            return "–"
        url = reverse("admin:serving_crmrefresh_change", args=[obj.refresh_id])
        return format_html('<a href="{}">#{}</a>', url, obj.refresh_id)

    def changelist_view(self, request, extra_context=None):
        per_day = selectors.segment_changes_per_day(days=30)
        days = sorted({row["day"] for row in per_day})
        segments = sorted({row["segment_after"] for row in per_day})
        counts = {(row["day"], row["segment_after"]): row["count"] for row in per_day}
        table = [(day, [counts.get((day, s), 0) for s in segments], sum(counts.get((day, s), 0) for s in segments))
                 for day in reversed(days)]  # fmt: skip
        chart = ""
        if len(days) > 1:
            first = days[0]
            chart = line_chart_svg(
                {s: [((d - first).days, counts.get((d, s), 0)) for d in days] for s in segments},
                title=f"Segment changes per day since {first:%Y-%m-%d}",
                x_label="day",
            )
        extra = {"per_day_segments": segments, "per_day_table": table, "per_day_chart": chart}
        return super().changelist_view(request, {**extra, **(extra_context or {})})


class RefreshStartForm(forms.Form):
    scope = forms.ChoiceField(
        choices=CrmRefresh.Scope.choices,
        initial=CrmRefresh.Scope.CHANGED,
        help_text="Changed: the customers whose features changed since the last finished refresh "
        "(every customer if the model version or the mapping changed since).",
    )


@admin.register(CrmRefresh)
class CrmRefreshAdmin(ServiceWrittenAdmin, admin.ModelAdmin):
    list_display = ["id", "status_column", "scope", "model_column", "progress_column", "counts", "actor_name",
                    "when"]  # fmt: skip
    list_filter = ["status", "scope", "model_name"]
    actions = ["stop", "resume"]
    change_list_template = "admin/serving/crmrefresh/change_list.html"
    change_form_template = "admin/serving/crmrefresh/change_form.html"
    fields = ["status_column", "progress_column", "scope", "scope_note", "since", "model_column", "cursor",
              "updated", "unchanged", "failed", "failures_list", "error", "attempts", "actor_name",
              "created_at", "started_at", "heartbeat_at", "finished_at", "changes_link", "audit"]  # fmt: skip
    readonly_fields = fields

    @admin.display(description="status", ordering="status")
    def status_column(self, obj):
        return badge(obj.status, _REFRESH_COLORS.get(obj.status, GREY))

    @admin.display(description="model")
    def model_column(self, obj):
        return f"{obj.model_name} v{obj.model_version}" if obj.model_version else obj.model_name

    @admin.display(description="customers")
    def counts(self, obj):
        return format_html(
            "{} updated<span class=\"run-meta\">{} unchanged · {} failed</span>",
            f"{obj.updated:,}",
            f"{obj.unchanged:,}",
            f"{obj.failed:,}",
        )

    @admin.display(description="started", ordering="started_at")
    def when(self, obj):
        if obj.started_at is None:
            return "not started"
        if obj.finished_at is None:
            took = "running"
        else:
            took = f"took {(obj.finished_at - obj.started_at).total_seconds():.1f} s"
        return format_html('{}<span class="run-meta">{}</span>', short_time(obj.started_at), took)

    @admin.display(description="progress")
    def progress_column(self, obj):
        total = "?" if obj.total is None else f"{obj.total:,}"
        return format_html(
            '<progress value="{}" max="100" style="width:90px"></progress> {} / {}',
            round(obj.progress * 100),
            f"{obj.processed:,}",
            total,
        )

    @admin.display(description="first failures")
    def failures_list(self, obj):
        if not obj.failures:
            return "–"
        return format_html_join("", "<div><b>{}</b>: {}</div>", ((f["customer_id"], f["error"]) for f in obj.failures))

    @admin.display(description="segments written")
    def changes_link(self, obj):
        url = reverse("admin:serving_segmentchange_changelist") + "?" + urlencode({"refresh__id__exact": obj.pk})
        return format_html('<a href="{}">the {} changes of this refresh</a>', url, f"{obj.updated:,}")

    @admin.display(description="audit")
    def audit(self, obj):
        return audit_trail_link(obj, "refresh")

    def has_refresh_segments_permission(self, request):
        return request.user.has_perm("serving.refresh_segments")

    def get_urls(self):
        return [
            path("start/", self.admin_site.admin_view(self.start_view), name="serving_crmrefresh_start"),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        extra = {
            "can_start": self.has_refresh_segments_permission(request),
            "refresh_page": CrmRefresh.objects.filter(status__in=CrmRefresh.ACTIVE).exists(),
        }
        return super().changelist_view(request, {**extra, **(extra_context or {})})

    def change_view(self, request, object_id, form_url="", extra_context=None):
        refresh = CrmRefresh.objects.filter(pk=object_id).first() if str(object_id).isdigit() else None
        extra = {"refresh_page": refresh is not None and refresh.status in CrmRefresh.ACTIVE}
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    @admin.action(description="Stop selected refreshes (after the chunk in progress)", permissions=["refresh_segments"])
    def stop(self, request, queryset):
        for refresh in queryset.filter(status__in=CrmRefresh.ACTIVE).order_by("id"):
            try:
                services.crm_refresh_stop(refresh_id=refresh.pk, by=request.user, reason="stopped in the admin")
            except ApplicationError as exc:
                self.message_user(request, f"#{refresh.pk}: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"Refresh #{refresh.pk} stops after the chunk it is writing.")

    @admin.action(description="Resume selected refreshes from where they stopped", permissions=["refresh_segments"])
    def resume(self, request, queryset):
        for refresh in queryset.order_by("id"):
            try:
                services.crm_refresh_resume(refresh_id=refresh.pk, by=request.user)
            except ApplicationError as exc:
                self.message_user(request, f"#{refresh.pk}: {exc}", messages.ERROR)
            else:
                self.message_user(
                    request, f"Refresh #{refresh.pk} is queued again from {refresh.cursor or 'the start'}."
                )

    def start_view(self, request):
        if not self.has_refresh_segments_permission(request):
            raise PermissionDenied
        form = RefreshStartForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                refresh = services.crm_refresh_start(scope=form.cleaned_data["scope"], by=request.user)
            except ApplicationError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(request, f"Refresh #{refresh.pk} queued: {refresh.scope_note}.")
                return redirect("admin:serving_crmrefresh_changelist")
        return admin_page(
            self,
            request,
            "Refresh customers' segments",
            "admin/registry/action_form.html",
            form=form,
            submit="Start",
            intro="Every customer's features are read from the CRM in chunks, predicted as one batch per chunk "
            "by the model in Production, and only the segments that changed are written back.",
        )


class _IndentedJSONField(forms.JSONField):
    """Shows the mapping one rule a line."""

    def prepare_value(self, value):
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False)


class CrmSettingsForm(forms.ModelForm):
    model_name = forms.ChoiceField(help_text="The registered model whose Production version predicts segments.")
    mapping = _IndentedJSONField(
        widget=forms.Textarea(attrs={"rows": 12, "cols": 80, "style": "font-family:monospace"}),
        help_text='Ordered rules, the first that matches wins: {"rules": [{"segment": "at_risk", "class": "yes", '
        '"min_probability": 0.6}, ..., {"segment": "loyal"}]}. A rule with a class and no min_probability matches '
        "that predicted class; one without a class matches anything and comes last.",
    )
    reason = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2, "cols": 80}))

    class Meta:
        model = CrmSettings
        fields = ["model_name", "mapping"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        names = list(RegisteredModel.objects.order_by("name").values_list("name", flat=True))
        current = self.initial.get("model_name")
        if current and current not in names:
            names.insert(0, current)
        self.fields["model_name"].choices = [(n, n) for n in names]

    def clean(self):
        data = super().clean()
        if "model_name" in data and "mapping" in data:
            try:
                classes = selectors.model_classes_get(model_name=data["model_name"])
                mapping_parse(data["mapping"], classes=classes, model_name=data["model_name"])
            except NotFound as exc:
                self.add_error("model_name", exc.message)
            except Unprocessable as exc:
                self.add_error("mapping", f"{exc.field}: {exc.message}" if exc.field else exc.message)
        return data


@admin.register(CrmSettings)
class CrmSettingsAdmin(admin.ModelAdmin):
    """One row: the changelist leads straight to it; saving goes through the service (audited)."""

    form = CrmSettingsForm
    fields = ["model_name", "mapping", "reason", "updated_at", "updated_by", "audit"]
    readonly_fields = ["updated_at", "updated_by", "audit"]

    @admin.display(description="audit")
    def audit(self, obj):
        return audit_trail_link(obj, "setting") if obj.pk else "–"

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        row, _ = CrmSettings.objects.get_or_create(pk=selectors.SETTINGS_PK)
        return redirect("admin:serving_crmsettings_change", row.pk)

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        try:
            services.crm_settings_update(
                by=request.user, model_name=data["model_name"], mapping=data["mapping"], reason=data.get("reason", "")
            )
        except ApplicationError as exc:
            self.message_user(request, str(exc), messages.ERROR)

    def log_change(self, request, obj, message):
        pass  # the service wrote the audit entry; Django's LogEntry would say it twice
