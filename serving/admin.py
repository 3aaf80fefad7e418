"""Admin for serving: what is deployed where, canary and shadow set by an ML engineer, and the prediction log."""

import json
from urllib.parse import urlsplit

from django import forms
from django.contrib import admin, messages
from django.db.models import OuterRef, Subquery, Sum
from django.shortcuts import redirect
from django.urls import path
from django.utils.html import format_html
from django.utils.text import Truncator

from core.admin import ServiceWrittenAdmin, admin_page, short_time
from core.errors import ApplicationError
from registry import services as registry_services
from registry.models import ModelVersion
from serving import services
from serving.models import Deployment, LastServed, PredictionLog


class TrafficRequestForm(forms.Form):
    version = forms.ModelChoiceField(
        queryset=ModelVersion.objects.select_related("model").exclude(stage=ModelVersion.Stage.ARCHIVED)
    )
    mode = forms.ChoiceField(choices=[("canary", "Canary (a share of requests)"), ("shadow", "Shadow (logged only)")])
    traffic_percent = forms.FloatField(required=False, min_value=0.1, max_value=100, help_text="Canary only.")
    environment = forms.ChoiceField(choices=Deployment.Environment.choices)
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2, "cols": 60}))


# Primaries follow the stages; a canary or shadow is requested here and approved by a second person
# (like a promotion) before it takes any traffic. Retiring one needs no approval.
@admin.register(Deployment)
class DeploymentAdmin(ServiceWrittenAdmin, admin.ModelAdmin):
    list_display = ["version", "environment", "mode", "traffic_share", "status", "endpoint", "since"]
    list_filter = ["status", "environment", "mode", "model"]
    # What answers now comes first; retired rows below, newest first.
    ordering = ["status", "environment", "model__name", "mode", "-created_at"]
    list_select_related = ["model", "version", "version__model"]
    readonly_fields = [f.name for f in Deployment._meta.fields]
    actions = ["retire"]
    change_list_template = "admin/serving/deployment/change_list.html"

    def get_queryset(self, request):
        # The primary answers what its environment's active canaries leave it.
        canaries = Deployment.objects.filter(
            model=OuterRef("model"),
            environment=OuterRef("environment"),
            mode=Deployment.Mode.CANARY,
            status=Deployment.Status.ACTIVE,
        )
        canary_share = canaries.values("model").annotate(total=Sum("traffic_percent")).values("total")[:1]
        return super().get_queryset(request).annotate(canary_share=Subquery(canary_share))

    @admin.display(description="endpoint")
    def endpoint(self, deployment):
        path = urlsplit(deployment.endpoint_url).path or deployment.endpoint_url
        return format_html('<span title="{}">{}</span>', deployment.endpoint_url, path)

    @admin.display(description="since", ordering="created_at")
    def since(self, deployment):
        return short_time(deployment.created_at)

    @admin.display(description="traffic")
    def traffic_share(self, deployment):
        if deployment.status != Deployment.Status.ACTIVE:
            return "–"
        if deployment.mode == Deployment.Mode.SHADOW:
            return "a copy of every request"
        if deployment.mode == Deployment.Mode.CANARY:
            return f"{deployment.traffic_percent:g} %"
        return f"{100 - (deployment.canary_share or 0):g} %"

    def get_urls(self):
        return [
            path("request/", self.admin_site.admin_view(self.request_view), name="serving_deployment_request"),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        user = request.user
        extra = {"can_request": user.has_perm("registry.request_promotion") or user.has_perm("serving.add_deployment")}
        return super().changelist_view(request, {**extra, **(extra_context or {})})

    @admin.action(description="Retire selected canary / shadow deployments")
    def retire(self, request, queryset):
        for deployment in queryset.filter(status=Deployment.Status.ACTIVE):
            try:
                services.deployment_retire(deployment=deployment, by=request.user, reason="retired in the admin")
            except ApplicationError as exc:
                self.message_user(request, f"{deployment}: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"Retired {deployment}.")

    def request_view(self, request):
        """Ask for a canary or shadow: a request another person approves, like a promotion."""
        initial = {"version": request.GET.get("version")} if str(request.GET.get("version", "")).isdigit() else {}
        form = TrafficRequestForm(request.POST or None, initial=initial)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                traffic_request = registry_services.traffic_request_create(
                    version=data["version"],
                    mode=data["mode"],
                    environment=data["environment"],
                    traffic_percent=data["traffic_percent"],
                    reason=data["reason"],
                    by=request.user,
                )
            except ApplicationError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                verdict = "compliant" if traffic_request.compliance.compliant else "NOT compliant"
                self.message_user(
                    request,
                    f"Request #{traffic_request.pk} opened ({verdict}); it takes traffic once another person "
                    "approves it.",
                    messages.SUCCESS if traffic_request.compliance.compliant else messages.WARNING,
                )
                return redirect("admin:registry_promotionrequest_change", traffic_request.pk)
        return admin_page(
            self,
            request,
            "Request a canary or shadow deployment",
            "admin/registry/action_form.html",
            form=form,
            submit="Request",
        )


@admin.register(PredictionLog)
class PredictionLogAdmin(ServiceWrittenAdmin, admin.ModelAdmin):
    list_display = [
        "at",
        "model_version",
        "served_by",
        "label",
        "confidence_column",
        "latency",
        "actual_column",
        "error_column",
    ]
    list_filter = ["model_name", "deployment_mode", "version"]
    search_fields = ["request_id"]
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in PredictionLog._meta.fields]
    show_full_result_count = False  # a count(*) over millions of rows on every page is not worth it

    @admin.display(description="at", ordering="created_at")
    def at(self, log):
        return format_html(
            '{}<span class="run-meta" title="request {}, row {}">{}…#{}</span>',
            short_time(log.created_at),
            log.request_id,
            log.row,
            log.request_id[:8],
            log.row,
        )

    @admin.display(description="model", ordering="model_name")
    def model_version(self, log):
        # A request refused before any version answered is logged with version 0.
        return f"{log.model_name} v{log.version}" if log.version else log.model_name

    @admin.display(description="served by", ordering="deployment_mode")
    def served_by(self, log):
        return log.deployment_mode or "–"

    @admin.display(description="prediction")
    def label(self, log):
        return _plain(log.prediction)

    @admin.display(description="confidence", ordering="confidence")
    def confidence_column(self, log):
        return "–" if log.confidence is None else f"{log.confidence:.2f}"

    @admin.display(description="latency", ordering="latency_ms")
    def latency(self, log):
        return f"{log.latency_ms:.1f} ms"

    @admin.display(description="feedback")
    def actual_column(self, log):
        return _plain(log.actual)

    @admin.display(description="error")
    def error_column(self, log):
        return format_html('<span title="{}">{}</span>', log.error, Truncator(log.error).chars(50)) if log.error else ""


def _plain(value):
    """A logged label as a person reads it: yes, not "yes"; 0.5, not 0.5000000000000001."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str):
        return value
    return json.dumps(value)


@admin.register(LastServed)
class LastServedAdmin(ServiceWrittenAdmin, admin.ModelAdmin):
    """The version each model's environment fell back to after a restart if its primary were refused."""

    list_display = ["model", "environment", "version", "served_at"]
    list_select_related = ["model", "version", "version__model"]
    readonly_fields = [f.name for f in LastServed._meta.fields]


# The CRM connector's admin lives with it.
from serving.crm import admin as crm_admin  # noqa: E402, F401
