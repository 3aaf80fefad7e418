"""Admin for the registry: where versions are reviewed, promoted, approved and rolled back.

Every button calls the same service as the REST API and the CLI; what a user sees follows
their role's permissions (an auditor reads, a data scientist requests, an approver decides).
"""

from django import forms
from django.contrib import admin, messages
from django.db.models import OuterRef, Subquery
from django.shortcuts import get_object_or_404, redirect
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from core.admin import GREY, ServiceWrittenAdmin, admin_page, audit_trail_url, badge, metric_column
from core.charts import histogram_svg
from core.errors import ApplicationError
from experiments.models import Run
from governance.admin import compliance_html
from governance.models import AuditAction, ComplianceEvaluation
from governance.selectors import audit_entries_of
from registry import selectors, services
from registry.models import Environment, ModelVersion, PromotionRequest, RegisteredModel

_STAGE_COLORS = {
    ModelVersion.Stage.NONE: "#6b7280",
    ModelVersion.Stage.STAGING: "#ca8a04",
    ModelVersion.Stage.PRODUCTION: "#16a34a",
    ModelVersion.Stage.ARCHIVED: "#9ca3af",
}
_STATUS_COLORS = {
    PromotionRequest.Status.PENDING: "#2563eb",
    PromotionRequest.Status.APPROVED: "#16a34a",
    PromotionRequest.Status.REJECTED: "#dc2626",
}


def _allowed(check, **kwargs):
    """Whether a service's permission check lets this through (the admin asks the service, never copies it)."""
    try:
        check(**kwargs)
    except ApplicationError:
        return False
    return True


def stage_badge(stage):
    return badge(stage, _STAGE_COLORS.get(stage, GREY))


def breaking_change_html(version):
    """What an approver must know about a version whose signature differs from its model's."""
    if not version.breaking_change:
        return "no: same features, target and classes as the version it was compared with at registration"
    return format_html(
        '<strong style="color:#dc2626">Breaking change</strong>: {}. Clients of the model must change too.',
        "; ".join(version.signature_changes),
    )


class RegisteredModelForm(forms.ModelForm):
    class Meta:
        model = RegisteredModel
        fields = ["description", "owner", "intended_use", "tags", "metric_thresholds"]


class RollbackForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 60}))
    emergency = forms.BooleanField(
        required=False,
        help_text="Roll back at once, without a second approver (needs the emergency_rollback permission).",
    )


class VersionInline(admin.TabularInline):
    model = ModelVersion
    fields = ["version_link", "stage_column", "accuracy", "run", "created_by", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False
    ordering = ["-version"]

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="version")
    def version_link(self, version):
        return format_html(
            '<a href="{}">v{}</a>', reverse("admin:registry_modelversion_change", args=[version.pk]), version.version
        )

    @admin.display(description="stage")
    def stage_column(self, version):
        return stage_badge(version.stage)

    @admin.display(description="accuracy")
    def accuracy(self, version):
        value = version.metrics.get("accuracy")
        return "–" if value is None else f"{value:.4f}"


@admin.register(RegisteredModel)
class RegisteredModelAdmin(admin.ModelAdmin):
    form = RegisteredModelForm
    list_display = ["name", "production", "staging", "version_count", "owner", "mlflow_column", "updated_at"]
    search_fields = ["name", "description", "intended_use"]
    inlines = [VersionInline]
    change_form_template = "admin/registry/registeredmodel/change_form.html"
    readonly_fields = ["name", "mlflow_synced_at", "mlflow_sync_error", "created_by", "created_at", "history"]
    fieldsets = [
        (None, {"fields": ["name", "description", "owner", "intended_use", "tags"]}),
        ("Registration gate", {"fields": ["metric_thresholds"]}),
        ("MLflow", {"fields": ["mlflow_synced_at", "mlflow_sync_error"]}),
        (None, {"fields": ["created_by", "created_at", "history"]}),
    ]

    def get_queryset(self, request):
        return selectors.model_list()

    @admin.display(description="Production", ordering="production_version")
    def production(self, model):
        return "–" if model.production_version is None else stage_badge(f"v{model.production_version}")

    @admin.display(description="Staging", ordering="staging_version")
    def staging(self, model):
        return "–" if model.staging_version is None else f"v{model.staging_version}"

    @admin.display(description="versions", ordering="version_count")
    def version_count(self, model):
        return model.version_count

    @admin.display(description="MLflow")
    def mlflow_column(self, model):
        if model.mlflow_synced_at:
            return "✔"
        if model.mlflow_sync_error:
            return format_html('<span style="color:#dc2626" title="{}">not in step</span>', model.mlflow_sync_error)
        return "pending"

    @admin.display(description="history")
    def history(self, model):
        return format_html('<a href="{}">audit trail of this model</a>', audit_trail_url(model))

    def has_add_permission(self, request):
        return False  # a model is created by registering its first version

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        """Edits go through the service, which audits them."""
        try:
            services.registered_model_update(
                model=obj, by=request.user, changes={name: form.cleaned_data[name] for name in form.changed_data}
            )
        except ApplicationError as exc:
            self.message_user(request, str(exc), messages.ERROR)

    def get_urls(self):
        return [
            path(
                "<int:model_id>/rollback/",
                self.admin_site.admin_view(self.rollback_view),
                name="registry_registeredmodel_rollback",
            ),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        model = RegisteredModel.objects.filter(pk=object_id).first() if str(object_id).isdigit() else None
        extra = {}
        if model is not None:
            extra = {
                "can_rollback": _allowed(services.production_rollback_check, by=request.user)
                or _allowed(services.production_rollback_check, by=request.user, emergency=True),
                "rollback_target": services.rollback_target(model),
                "production_version": selectors.production_version_get(model_name=model.name),
                "serving_versions": list(
                    model.versions.filter(stage__in=[ModelVersion.Stage.PRODUCTION, ModelVersion.Stage.STAGING])
                    .order_by("stage")
                ),
            }
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    def rollback_view(self, request, model_id):
        """Roll back production: a request for a second approver, or at once in an emergency."""
        model = get_object_or_404(RegisteredModel, pk=model_id)
        form = RollbackForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                result = services.production_rollback(model_name=model.name, by=request.user, **form.cleaned_data)
            except ApplicationError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                if form.cleaned_data["emergency"]:
                    self.message_user(request, f"Rolled back: {result} is in Production again.")
                    return redirect("admin:registry_registeredmodel_change", model.pk)
                self.message_user(request, f"Rollback request #{result.pk} opened; another approver decides it.")
                return redirect("admin:registry_promotionrequest_change", result.pk)
        return admin_page(
            self,
            request,
            f"Roll back production of {model.name}",
            "admin/registry/action_form.html",
            form=form,
            object=model,
            intro=format_html(
                "Production is <b>{}</b>; rolling back puts <b>{}</b> there again and archives the current one.",
                selectors.production_version_get(model_name=model.name) or "empty",
                services.rollback_target(model) or "no earlier version",
            ),
            submit="Roll back",
        )


class RegisterForm(forms.Form):
    """The model is chosen from the existing ones; a new model is a deliberate choice, so a typo cannot make one."""

    NEW = "__new__"
    model = forms.ChoiceField(label="Model", help_text="The run becomes this model's next version.")
    new_name = forms.CharField(
        required=False, max_length=100, label="New model name", help_text="Only with “A new model…” above."
    )
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}))
    breaking_change = forms.BooleanField(
        required=False,
        help_text="Its features, target or classes differ from the model's Production version on purpose: "
        "clients must change too. Audited, and shown to whoever approves it.",
    )

    def __init__(self, *args, model_names, **kwargs):
        super().__init__(*args, **kwargs)
        self.model_names = list(model_names)
        self.fields["model"].choices = [*((name, name) for name in self.model_names), (self.NEW, "A new model…")]
        if not self.model_names:
            self.fields["model"].initial = self.NEW

    def clean(self):
        data = super().clean()
        if data.get("model") == self.NEW:
            name = (data.get("new_name") or "").strip()
            if not name:
                self.add_error("new_name", "Name the new model, or choose an existing one above.")
            elif name in self.model_names:
                self.add_error("new_name", f"{name!r} already exists: choose it above.")
            data["name"] = name
        else:
            data["name"] = data.get("model")
        return data


class PromotionRequestForm(forms.Form):
    to_stage = forms.ChoiceField(choices=PromotionRequest.TargetStage.choices, initial="Production")
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 60}))

    def __init__(self, *args, version, **kwargs):
        super().__init__(*args, **kwargs)
        # Only the stages the version is not in already.
        self.fields["to_stage"].choices = [
            choice for choice in PromotionRequest.TargetStage.choices if choice[0] != version.stage
        ]


# Versions are registered from runs (action on the runs list, API or CLI); a version is immutable,
# its stage moves only through promotion requests.
@admin.register(ModelVersion)
class ModelVersionAdmin(ServiceWrittenAdmin, admin.ModelAdmin):
    list_display = [
        "__str__",
        "stage_column",
        "accuracy",
        "f1_macro",
        "compliance_column",
        "run_link",
        "created_by",
        "created_at",
    ]
    list_filter = ["stage", "model"]
    search_fields = ["model__name", "description", "artifact_sha256"]
    list_select_related = ["model", "run", "created_by"]
    change_form_template = "admin/registry/modelversion/change_form.html"
    fieldsets = [
        (None, {"fields": ["model", "version", "stage_column", "description", "created_by", "created_at"]}),
        ("Compliance", {"fields": ["compliance"]}),
        ("Lineage", {"fields": ["run_link", "dataset", "artifact_path", "artifact_sha256"]}),
        ("Signature", {"fields": ["signature_table", "breaking_change_note"]}),
        ("Serving", {"fields": ["serving_form", "onnx_difference", "serving_note"]}),
        ("MLflow", {"fields": ["mlflow_version"]}),
        ("Trail", {"fields": ["stage_changed_at", "production_entered_at", "history"]}),
    ]

    accuracy = metric_column("accuracy", source="metrics")
    f1_macro = metric_column("f1_macro", source="metrics")

    def get_queryset(self, request):
        latest = ComplianceEvaluation.objects.filter(version=OuterRef("pk")).order_by("-created_at", "-id")
        return (
            super()
            .get_queryset(request)
            .annotate(
                compliance_score=Subquery(latest.values("score")[:1]),
                compliance_ok=Subquery(latest.values("compliant")[:1]),
            )
        )

    @admin.display(description="ONNX max abs diff")
    def onnx_difference(self, version):
        if version.onnx_max_abs_diff is None:
            return "–"
        return f"{version.onnx_max_abs_diff:.2e} (largest probability difference from scikit-learn)"

    def get_readonly_fields(self, request, obj=None):
        return [field for fieldset in self.fieldsets for field in fieldset[1]["fields"]]

    @admin.display(description="stage", ordering="stage")
    def stage_column(self, version):
        return stage_badge(version.stage)

    @admin.display(description="compliance")
    def compliance_column(self, version):
        if version.compliance_score is None:
            return "–"
        color = "#16a34a" if version.compliance_ok else "#dc2626"
        return format_html('<span style="color:{}">{}%</span>', color, f"{version.compliance_score:.0f}")

    @admin.display(description="run")
    def run_link(self, version):
        return format_html(
            '<a href="{}">#{} {}</a>',
            reverse("admin:experiments_run_change", args=[version.run_id]),
            version.run_id,
            version.run.name,
        )

    @admin.display(description="latest evaluation")
    def compliance(self, version):
        return compliance_html(selectors.version_compliance_latest(version=version))

    @admin.display(description="features")
    def signature_table(self, version):
        rows = format_html_join(
            "", "<tr><td>{}</td><td>{}</td></tr>", ((f["name"], f["dtype"]) for f in version.signature["features"])
        )
        return format_html(
            "<table><thead><tr><th>feature</th><th>dtype</th></tr></thead><tbody>{}</tbody></table>"
            "<p>target <b>{}</b>, classes: {}</p>",
            rows,
            version.signature["target"],
            ", ".join(version.signature["classes"]),
        )

    @admin.display(description="breaking change")
    def breaking_change_note(self, version):
        return breaking_change_html(version)

    @admin.display(description="history")
    def history(self, version):
        return format_html('<a href="{}">audit trail of this version</a>', audit_trail_url(version))

    def get_urls(self):
        return [
            path("register/", self.admin_site.admin_view(self.register_view), name="registry_modelversion_register"),
            path(
                "<int:version_id>/request-promotion/",
                self.admin_site.admin_view(self.request_promotion_view),
                name="registry_modelversion_request_promotion",
            ),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        version = ModelVersion.objects.filter(pk=object_id).first() if str(object_id).isdigit() else None
        extra = {}
        if version is not None:
            histograms = [
                histogram_svg(stats["histogram"]["edges"], stats["histogram"]["counts"], title=name)
                for name, stats in version.reference_stats["features"].items()
                if stats.get("histogram")
            ]
            extra = {
                "version": version,
                "metric_rows": sorted(version.metrics.items()),
                "histograms": histograms,
                "reference_rows": sorted(version.reference_stats["features"].items()),
                "requests": version.promotion_requests.select_related("requested_by", "decided_by")[:20],
                "stage_history": audit_entries_of(version, action=AuditAction.VERSION_STAGE_CHANGED),
                "can_request": request.user.has_perm("registry.request_promotion")
                and version.stage not in (ModelVersion.Stage.ARCHIVED, ModelVersion.Stage.PRODUCTION),
                "can_request_traffic": version.stage != ModelVersion.Stage.ARCHIVED
                and (
                    request.user.has_perm("registry.request_promotion")
                    or request.user.has_perm("serving.add_deployment")
                ),
            }
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    def register_view(self, request):
        """Register a finished run (?run=ID, from the runs list's action) as the next version of a model."""
        run = get_object_or_404(Run, pk=request.GET.get("run") if str(request.GET.get("run", "")).isdigit() else 0)
        names = selectors.model_list().values_list("name", flat=True)
        form = RegisterForm(request.POST or None, model_names=names)
        if request.method == "POST" and form.is_valid():
            try:
                version = services.model_version_register(
                    run_id=run.pk,
                    model_name=form.cleaned_data["name"],
                    description=form.cleaned_data["description"],
                    breaking_change=form.cleaned_data["breaking_change"],
                    by=request.user,
                )
            except ApplicationError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(request, f"Registered run #{run.pk} as {version}.")
                return redirect("admin:registry_modelversion_change", version.pk)
        return admin_page(
            self,
            request,
            f"Register run #{run.pk} as a model version",
            "admin/registry/action_form.html",
            form=form,
            object=run,
            intro=format_html(
                "Run <b>#{} {}</b> ({}), accuracy {}.",
                run.pk,
                run.name,
                run.status,
                "–" if run.latest_metrics.get("accuracy") is None else f"{run.latest_metrics['accuracy']:.4f}",
            ),
            submit="Register",
        )

    def request_promotion_view(self, request, version_id):
        version = get_object_or_404(ModelVersion.objects.select_related("model"), pk=version_id)
        form = PromotionRequestForm(request.POST or None, version=version)
        if request.method == "POST" and form.is_valid():
            try:
                promotion = services.promotion_request_create(version=version, by=request.user, **form.cleaned_data)
            except ApplicationError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                verdict = "compliant" if promotion.compliance.compliant else "NOT compliant"
                self.message_user(
                    request,
                    f"Request #{promotion.pk} opened ({verdict}, {promotion.compliance.score:.0f}%); "
                    "another approver decides it.",
                    messages.SUCCESS if promotion.compliance.compliant else messages.WARNING,
                )
                return redirect("admin:registry_promotionrequest_change", promotion.pk)
        return admin_page(
            self,
            request,
            f"Request the promotion of {version}",
            "admin/registry/action_form.html",
            form=form,
            object=version,
            intro=format_html("{} is in {} now.", version, stage_badge(version.stage)),
            submit="Request promotion",
        )


class DecisionForm(forms.Form):
    comment = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}))
    override_justification = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text="Only to put a non-compliant version in Production (needs the override_compliance permission).",
    )


# Requests are opened from a version's page ("Request promotion") and decided through
# Approve / Reject, never edited.
@admin.register(PromotionRequest)
class PromotionRequestAdmin(ServiceWrittenAdmin, admin.ModelAdmin):
    list_display = [
        "id",
        "version",
        "kind",
        "transition",
        "status_column",
        "compliance_column",
        "requested_by",
        "requested_at",
        "decided_by",
    ]
    list_display_links = ["id", "version"]
    list_filter = ["status", "kind", "to_stage", "version__model"]
    search_fields = ["version__model__name", "reason", "comment"]
    list_select_related = ["version", "version__model", "requested_by", "decided_by", "compliance"]
    change_form_template = "admin/registry/promotionrequest/change_form.html"
    fieldsets = [
        (None, {"fields": ["version_link", "kind", "transition", "status_column", "reason", "breaking_change"]}),
        ("Requested", {"fields": ["requested_by", "requested_at"]}),
        ("Compliance", {"fields": ["compliance_table"]}),
        ("Decision", {"fields": ["decided_by", "decided_at", "comment", "override_justification", "history"]}),
    ]

    def get_readonly_fields(self, request, obj=None):
        return [field for fieldset in self.fieldsets for field in fieldset[1]["fields"]]

    @admin.display(description="asks for")
    def transition(self, promotion):
        if promotion.is_traffic:
            return format_html(
                "{} stays {}, as {}", promotion.version, stage_badge(promotion.from_stage), promotion.target
            )
        return format_html("{} → {}", stage_badge(promotion.from_stage), stage_badge(promotion.to_stage))

    @admin.display(description="breaking change")
    def breaking_change(self, promotion):
        return breaking_change_html(promotion.version)

    @admin.display(description="status", ordering="status")
    def status_column(self, promotion):
        return badge(promotion.status, _STATUS_COLORS[promotion.status])

    @admin.display(description="compliance")
    def compliance_column(self, promotion):
        if promotion.compliance is None:
            return "–"
        color = "#16a34a" if promotion.compliance.compliant else "#dc2626"
        return format_html('<span style="color:{}">{}%</span>', color, f"{promotion.compliance.score:.0f}")

    @admin.display(description="compliance evaluation")
    def compliance_table(self, promotion):
        return compliance_html(promotion.compliance)

    @admin.display(description="version")
    def version_link(self, promotion):
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:registry_modelversion_change", args=[promotion.version_id]),
            promotion.version,
        )

    @admin.display(description="history")
    def history(self, promotion):
        return format_html('<a href="{}">audit trail of this request</a>', audit_trail_url(promotion))

    def get_urls(self):
        return [
            path(
                "<int:request_id>/decide/",
                self.admin_site.admin_view(self.decide_view),
                name="registry_promotionrequest_decide",
            ),
            *super().get_urls(),
        ]

    def _decision_block(self, request, promotion):
        """Why this user cannot decide this request (the service's own words), or "" if they can."""
        try:
            services.promotion_decision_check(request=promotion, by=request.user)
        except ApplicationError as exc:
            return exc.message
        return ""

    def change_view(self, request, object_id, form_url="", extra_context=None):
        promotion = PromotionRequest.objects.filter(pk=object_id).first() if str(object_id).isdigit() else None
        extra = {}
        if promotion is not None:
            extra = {
                "promotion": promotion,
                "comparison": selectors.promotion_comparison(request=promotion),
                "decision_form": DecisionForm(),
                "decision_block": self._decision_block(request, promotion),
                "can_override": request.user.has_perm("registry.override_compliance"),
                "production_traffic": promotion.to_stage == ModelVersion.Stage.PRODUCTION
                or promotion.environment == Environment.PRODUCTION,
            }
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    def decide_view(self, request, request_id):
        """Approve or reject (the button pressed), through the same services as the API and CLI."""
        promotion = get_object_or_404(PromotionRequest, pk=request_id)
        if request.method != "POST":
            return redirect("admin:registry_promotionrequest_change", promotion.pk)
        form = DecisionForm(request.POST)
        form.is_valid()
        data = form.cleaned_data
        try:
            if "_reject" in request.POST:
                services.promotion_request_reject(request_id=promotion.pk, by=request.user, comment=data["comment"])
                self.message_user(request, f"Rejected #{promotion.pk}.")
            else:
                services.promotion_request_approve(
                    request_id=promotion.pk,
                    by=request.user,
                    comment=data["comment"],
                    override_justification=data["override_justification"],
                )
                promotion.refresh_from_db()
                outcome = (
                    f"answers as {promotion.target}" if promotion.is_traffic else f"is now in {promotion.to_stage}"
                )
                self.message_user(request, f"Approved #{promotion.pk}: {promotion.version} {outcome}.")
        except ApplicationError as exc:
            self.message_user(request, str(exc), messages.ERROR)
        return redirect("admin:registry_promotionrequest_change", promotion.pk)
