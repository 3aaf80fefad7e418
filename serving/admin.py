"""Admin for serving: what is deployed where, canary and shadow set by an ML engineer, and the prediction log."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path

from core.admin import ServiceWrittenAdmin
from core.errors import ApplicationError
from registry.models import ModelVersion
from serving import services
from serving.models import Deployment, PredictionLog


class SideDeploymentForm(forms.Form):
    version = forms.ModelChoiceField(
        queryset=ModelVersion.objects.select_related("model").exclude(stage=ModelVersion.Stage.ARCHIVED)
    )
    mode = forms.ChoiceField(choices=[("canary", "Canary (a share of requests)"), ("shadow", "Shadow (logged only)")])
    traffic_percent = forms.FloatField(required=False, min_value=0.1, max_value=100, help_text="Canary only.")
    environment = forms.ChoiceField(choices=Deployment.Environment.choices)
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2, "cols": 60}))


# Primaries follow the stages; canaries and shadows are set with "Set canary or shadow".
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
            path("set/", self.admin_site.admin_view(self.set_view), name="serving_deployment_set"),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        extra = {"can_set": request.user.has_perm("serving.add_deployment")}
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

    def set_view(self, request):
        if not request.user.has_perm("serving.add_deployment"):
            raise PermissionDenied
        form = SideDeploymentForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                if data["mode"] == "canary":
                    deployment = services.deployment_set_canary(
                        version=data["version"],
                        percent=data["traffic_percent"],
                        by=request.user,
                        reason=data["reason"],
                        environment=data["environment"],
                    )
                else:
                    deployment = services.deployment_set_shadow(
                        version=data["version"], by=request.user, reason=data["reason"], environment=data["environment"]
                    )
            except ApplicationError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(request, f"{deployment} is active; serving processes pick it up within a second.")
                return redirect("admin:serving_deployment_changelist")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Set a canary or shadow deployment",
            "form": form,
            "submit": "Set",
        }
        return TemplateResponse(request, "admin/registry/action_form.html", context)


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


# The CRM connector's admin lives with it.
from serving.crm import admin as crm_admin  # noqa: E402, F401
