"""Admin for monitoring: the scheduled jobs (progress, last result, run now), drift runs with their columns,
hourly aggregates and drift references. Every row is written by monitoring's services, never edited here."""

import json

from django.contrib import admin, messages
from django.utils.html import format_html

from core.admin import ServiceWrittenAdmin, badge
from core.errors import ApplicationError
from monitoring.models import DriftReference, DriftResult, DriftRun, HourlyAggregate, MonitoringJob
from monitoring.services import drift_reference_rebuild_queue, monitoring_job_queue

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
