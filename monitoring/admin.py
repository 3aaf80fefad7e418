"""Admin for monitoring: the scheduled jobs (progress, last result, run now), drift runs with their columns,
hourly aggregates and drift references, alerts and their e-mails, retrainings: written by monitoring's services,
never edited here. Alert rules and retraining policies are edited here, saved through their services."""

import json

from django import forms
from django.contrib import admin, messages
from django.shortcuts import redirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from core.admin import ServiceWrittenAdmin, admin_page, audit_trail_url, badge
from core.errors import ApplicationError
from monitoring.models import (
    Alert,
    AlertNotification,
    AlertRule,
    DriftReference,
    DriftResult,
    DriftRun,
    HourlyAggregate,
    MonitoringJob,
    Retraining,
    RetrainingPolicy,
)
from monitoring.services import (
    alert_acknowledge,
    alert_rule_save,
    alert_silence,
    drift_reference_rebuild_queue,
    monitoring_job_queue,
    retraining_policy_save,
)

_STATUS_COLORS = {"ok": "#15803d", "running": "#2563eb", "failed": "#b91c1c", "idle": "#6b7280"}


@admin.register(MonitoringJob)
class MonitoringJobAdmin(ServiceWrittenAdmin, admin.ModelAdmin):
    list_display = ["model_name", "job", "status_badge", "progress_bar", "summary", "finished_at"]
    list_filter = ["job", "status"]
    search_fields = ["model_name"]
    readonly_fields = [f.name for f in MonitoringJob._meta.fields] + ["last_result_pretty"]
    actions = ["run_now"]

    @admin.display(description="status")
    def status_badge(self, job):
        return badge(job.status, _STATUS_COLORS.get(job.status, "#6b7280"))

    @admin.display(description="progress")
    def progress_bar(self, job):
        return format_html(
            '<div style="width:120px;background:#e5e7eb;border-radius:3px" title="{}">'
            '<div style="width:{}%;background:#2563eb;height:8px;border-radius:3px"></div></div>'
            '<span style="font-size:11px">{}</span>',
            job.progress_message,
            int(job.progress * 100),
            job.progress_message,
        )

    @admin.display(description="last result")
    def summary(self, job):
        result = job.last_result or {}
        if job.last_error:
            return format_html('<span style="color:#b91c1c">{}</span>', job.last_error[:120])
        if job.job == MonitoringJob.Job.AGGREGATE and result:
            return f"{result.get('hours', 0)} hours, {result.get('sketches', 0)} sketches in {result.get('seconds')} s"
        if job.job == MonitoringJob.Job.DRIFT and result:
            parts = []
            for run in result.get("versions", []):
                drifted = ", ".join(run.get("drifted") or []) or "none"
                parts.append(f"v{run['version']}: {run['status']}, {run['rows']} rows, drifted: {drifted}")
            return "; ".join(parts) or "no version to check"
        return "–"

    @admin.display(description="last result (JSON)")
    def last_result_pretty(self, job):
        return format_html("<pre>{}</pre>", json.dumps(job.last_result, indent=2))

    @admin.action(description="Run the selected jobs now (queued on the monitoring queue)")
    def run_now(self, request, queryset):
        for job in queryset:
            try:
                monitoring_job_queue(job=job.job, model_name=job.model_name, by=request.user)
            except ApplicationError as exc:
                self.message_user(request, f"{job}: {exc}", messages.ERROR)
            except Exception as exc:  # broker down
                self.message_user(request, f"{job}: could not queue ({exc})", messages.ERROR)
            else:
                self.message_user(request, f"{job}: queued; its progress shows here.")


class DriftResultInline(admin.TabularInline):
    model = DriftResult
    fields = ["name", "role", "method", "decides", "score_shown", "threshold", "result", "current_rows", "note"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["role", "-verdict", "name"]

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="decides the column")
    def decides(self, result):
        return "yes" if result.verdict else "effect size"

    @admin.display(description="score")
    def score_shown(self, result):
        return "–" if result.score is None else f"{result.score:.4g}"

    @admin.display(description="drift")
    def result(self, result):
        if result.drifted is None:
            return badge("not tested")
        return badge("drift", "#b91c1c") if result.drifted else badge("ok", "#15803d")


@admin.register(DriftRun)
class DriftRunAdmin(ServiceWrittenAdmin, admin.ModelAdmin):
    list_display = ["computed_at", "model_name", "version", "window", "kind", "verdict", "rows", "trigger", "seconds"]
    list_filter = ["model_name", "kind", "status", "dataset_drift", "window", "trigger"]
    readonly_fields = [f.name for f in DriftRun._meta.fields] + ["verdict"]
    # Compact: the run on a few lines, its columns (the inline) right below.
    fieldsets = [
        (
            None,
            {
                "fields": [
                    ("model_name", "version", "window", "kind", "method"),
                    ("window_start", "window_end", "rows", "reference_rows"),
                    ("verdict", "share_drifted", "message"),
                    ("trigger", "computed_at", "seconds"),
                ]
            },
        )
    ]
    inlines = [DriftResultInline]
    date_hierarchy = "computed_at"

    @admin.display(description="verdict")
    def verdict(self, run):
        if run.status != DriftRun.Status.OK:
            return badge(run.get_status_display())
        if run.dataset_drift:
            return badge(f"drift ({run.n_drifted} of {run.n_columns})", "#b91c1c")
        return badge(f"no drift ({run.n_drifted} of {run.n_columns})", "#15803d")


@admin.register(HourlyAggregate)
class HourlyAggregateAdmin(ServiceWrittenAdmin, admin.ModelAdmin):
    list_display = [
        "hour",
        "model_name",
        "version",
        "deployment_mode",
        "requests",
        "rows",
        "errors",
        "latency_p50_ms",
        "latency_p99_ms",
        "labelled",
        "correct",
    ]
    list_filter = ["model_name", "deployment_mode", "version"]
    date_hierarchy = "hour"
    readonly_fields = [f.name for f in HourlyAggregate._meta.fields]
    show_full_result_count = False


@admin.register(DriftReference)
class DriftReferenceAdmin(ServiceWrittenAdmin, admin.ModelAdmin):
    list_display = ["version", "dataset", "n_rows", "validation_accuracy", "calibrated", "build_seconds", "built_at"]
    readonly_fields = [
        "version",
        "dataset",
        "n_rows",
        "vector_layout",
        "validation_accuracy",
        "validation_rows",
        "build_seconds",
        "built_at",
    ]
    exclude = ["calibration"]
    actions = ["rebuild"]

    @admin.display(boolean=True, description="CBPE calibrated")
    def calibrated(self, reference):
        return bool(reference.calibration)

    @admin.action(description="Rebuild the selected references from their training data (queued)")
    def rebuild(self, request, queryset):
        for reference in queryset:
            try:
                drift_reference_rebuild_queue(version_id=reference.version_id, by=request.user)
            except ApplicationError as exc:
                self.message_user(request, f"{reference}: {exc}", messages.ERROR)
            except Exception as exc:
                self.message_user(request, f"{reference}: could not queue ({exc})", messages.ERROR)
            else:
                self.message_user(request, f"{reference}: rebuild queued.")


# --- Alerts and retraining ----------------------------------------------------------------------------

_ALERT_COLORS = {"pending": "#d97706", "firing": "#b91c1c", "resolved": "#15803d"}


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    """Alert rules, edited here by the team (a default per kind for every model, or a model's own); each save is
    audited through the service. Switch a rule off with "enabled": its alerts' history stays readable."""

    list_display = ["name", "kind", "model_or_default", "enabled", "threshold", "window_hours", "min_samples",
                    "for_evaluations", "effect_size_floor", "remind_every_hours"]  # fmt: skip
    list_filter = ["kind", "enabled", "model"]
    search_fields = ["name", "description"]
    fieldsets = [
        (None, {"fields": ["name", "kind", "model", "enabled", "description"]}),
        (
            "Condition",
            {
                "fields": [
                    "threshold",
                    "window_hours",
                    "min_samples",
                    "for_evaluations",
                    "effect_size_floor",
                    "features",
                    "accuracy_source",
                ]
            },
        ),  # fmt: skip
        ("Notifications", {"fields": ["remind_every_hours", "email_to"]}),
    ]

    @admin.display(description="model", ordering="model__name")
    def model_or_default(self, rule):
        return rule.model.name if rule.model_id else "every model (default)"

    def save_model(self, request, obj, form, change):
        try:
            alert_rule_save(rule=obj, by=request.user)
        except ApplicationError as exc:
            self.message_user(request, str(exc), messages.ERROR)

    def has_delete_permission(self, request, obj=None):
        return False


class AlertNotificationInline(admin.TabularInline):
    model = AlertNotification
    fields = ["created_at", "event", "recipients", "status", "attempts", "last_error", "sent_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


class SilenceForm(forms.Form):
    until = forms.DateTimeField(help_text="UTC, e.g. 2026-11-24 08:00")
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), help_text="Why it may stay quiet until then.")


@admin.register(Alert)
class AlertAdmin(ServiceWrittenAdmin, admin.ModelAdmin):
    """Alerts as the evaluations moved them; acknowledge or silence them here (audited)."""

    list_display = ["id", "state_badge", "model", "kind", "summary", "opened_at", "fired_at", "resolved_at",
                    "handled"]  # fmt: skip
    list_filter = ["state", "rule__kind", "model"]
    list_select_related = ["rule", "model", "acknowledged_by"]
    readonly_fields = [f.name for f in Alert._meta.fields if f.name != "evidence"] + [
        "evidence_pretty",
        "retraining_links",
        "audit",
    ]
    exclude = ["evidence"]
    inlines = [AlertNotificationInline]
    actions = ["acknowledge", "silence"]
    date_hierarchy = "opened_at"

    @admin.display(description="state", ordering="state")
    def state_badge(self, alert):
        return badge(alert.state, _ALERT_COLORS.get(alert.state, "#6b7280"))

    @admin.display(description="kind", ordering="rule__kind")
    def kind(self, alert):
        return alert.rule.kind

    @admin.display(description="acknowledged / silenced")
    def handled(self, alert):
        parts = []
        if alert.acknowledged_at:
            parts.append(f"acked by {alert.acknowledged_by}")
        if alert.silenced_until and alert.silenced_until > timezone.now():
            parts.append(f"silenced until {alert.silenced_until:%Y-%m-%d %H:%M}")
        return "; ".join(parts) or "–"

    @admin.display(description="evidence")
    def evidence_pretty(self, alert):
        return format_html("<pre>{}</pre>", json.dumps(alert.evidence, indent=2, default=str))

    @admin.display(description="retrainings it started")
    def retraining_links(self, alert):
        links = [
            format_html(
                '<a href="{}">#{} ({})</a>',
                reverse("admin:monitoring_retraining_change", args=[retraining.pk]),
                retraining.pk,
                retraining.get_status_display(),
            )
            for retraining in alert.retrainings.all()
        ]
        return format_html_join(", ", "{}", ((link,) for link in links)) if links else "–"

    @admin.display(description="audit trail")
    def audit(self, alert):
        return format_html('<a href="{}">entries about this alert</a>', audit_trail_url(alert))

    @admin.action(description="Acknowledge the selected alerts (no more reminders)")
    def acknowledge(self, request, queryset):
        for alert in queryset:
            try:
                alert_acknowledge(alert_id=alert.pk, by=request.user)
            except ApplicationError as exc:
                self.message_user(request, f"#{alert.pk}: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"Alert #{alert.pk} acknowledged.")

    @admin.action(description="Silence the selected alerts until a time…")
    def silence(self, request, queryset):
        ids = ",".join(str(pk) for pk in queryset.values_list("pk", flat=True))
        return redirect(reverse("admin:monitoring_alert_silence") + f"?ids={ids}")

    def get_urls(self):
        return [
            path("silence/", self.admin_site.admin_view(self.silence_view), name="monitoring_alert_silence"),
            *super().get_urls(),
        ]

    def silence_view(self, request):
        ids = [int(part) for part in request.GET.get("ids", "").split(",") if part.isdigit()]
        alerts = list(Alert.objects.filter(pk__in=ids).select_related("rule", "model"))
        form = SilenceForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            done = 0
            for alert in alerts:
                try:
                    alert_silence(alert_id=alert.pk, by=request.user, **form.cleaned_data)
                except ApplicationError as exc:
                    self.message_user(request, f"#{alert.pk}: {exc}", messages.ERROR)
                else:
                    done += 1
            if done:
                self.message_user(
                    request, f"{done} alert(s) silenced until {form.cleaned_data['until']:%Y-%m-%d %H:%M}."
                )
            return redirect("admin:monitoring_alert_changelist")
        return admin_page(
            self,
            request,
            "Silence alerts",
            "admin/registry/action_form.html",
            form=form,
            intro="; ".join(f"#{a.pk} {a.rule.kind} on {a.model.name} ({a.state})" for a in alerts)
            or "No alert chosen.",
            submit="Silence",
        )


@admin.register(AlertNotification)
class AlertNotificationAdmin(ServiceWrittenAdmin, admin.ModelAdmin):
    """Each alert e-mail: its recipients, every attempt's outcome, and where it ended."""

    list_display = ["created_at", "alert", "event", "status", "attempts", "last_error", "sent_at"]
    list_filter = ["status", "event"]
    readonly_fields = [f.name for f in AlertNotification._meta.fields]


@admin.register(RetrainingPolicy)
class RetrainingPolicyAdmin(admin.ModelAdmin):
    """A model's retraining policy (off by default), audited on each save. It never promotes: it opens a request."""

    list_display = ["model", "enabled", "drift_windows", "accuracy_below", "accuracy_windows", "cooldown_hours",
                    "request_stage", "run_as"]  # fmt: skip
    list_filter = ["enabled"]

    def save_model(self, request, obj, form, change):
        try:
            retraining_policy_save(policy=obj, by=request.user)
        except ApplicationError as exc:
            self.message_user(request, str(exc), messages.ERROR)

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Retraining)
class RetrainingAdmin(ServiceWrittenAdmin, admin.ModelAdmin):
    """What each retraining did: its trigger and evidence, the fresh dataset, the run, the version, the request."""

    list_display = ["id", "model", "status", "trigger", "base_version", "run", "new_version", "request_link",
                    "started_at", "finished_at"]  # fmt: skip
    list_filter = ["status", "trigger", "model"]
    readonly_fields = [f.name for f in Retraining._meta.fields if f.name != "evidence"] + ["evidence_pretty"]
    exclude = ["evidence"]

    @admin.display(description="promotion request")
    def request_link(self, retraining):
        if not retraining.promotion_request_id:
            return "–"
        url = reverse("admin:registry_promotionrequest_change", args=[retraining.promotion_request_id])
        return format_html('<a href="{}">#{}</a>', url, retraining.promotion_request_id)

    @admin.display(description="evidence")
    def evidence_pretty(self, retraining):
        return format_html("<pre>{}</pre>", json.dumps(retraining.evidence, indent=2, default=str))
