"""Admin for serving: what is deployed where, canary and shadow set by an ML engineer, and the prediction log."""

from django import forms
from django.contrib import admin, messages
from django.shortcuts import redirect
from django.urls import path

from core.admin import ServiceWrittenAdmin, admin_page
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
    list_display = [
        "model",
        "version",
        "environment",
        "mode",
        "traffic_percent",
        "status",
        "endpoint_url",
        "created_at",
    ]
    list_filter = ["status", "environment", "mode", "model"]
    readonly_fields = [f.name for f in Deployment._meta.fields]
    actions = ["retire"]
    change_list_template = "admin/serving/deployment/change_list.html"

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
        "created_at",
        "request_id",
        "row",
        "model_name",
        "version",
        "deployment_mode",
        "prediction",
        "confidence",
        "latency_ms",
        "actual",
        "error",
    ]
    list_filter = ["model_name", "deployment_mode", "version"]
    search_fields = ["request_id"]
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in PredictionLog._meta.fields]
    show_full_result_count = False  # a count(*) over millions of rows on every page is not worth it


@admin.register(LastServed)
class LastServedAdmin(ServiceWrittenAdmin, admin.ModelAdmin):
    """The version each model's environment fell back to after a restart if its primary were refused."""

    list_display = ["model", "environment", "version", "served_at"]
    list_select_related = ["model", "version", "version__model"]
    readonly_fields = [f.name for f in LastServed._meta.fields]


# The CRM connector's admin lives with it.
from serving.crm import admin as crm_admin  # noqa: E402, F401
