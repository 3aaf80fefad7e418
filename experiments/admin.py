"""Admin for experiments, datasets and runs: launch, watch, compare. Every write goes through services."""

import mimetypes

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Max
from django.http import HttpResponse
from django.shortcuts import redirect
from django.template.defaultfilters import filesizeformat
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode

from core.admin import GREY, ServiceWrittenAdmin, admin_page, badge, metric_column, short_time
from core.charts import line_chart_svg
from core.errors import ApplicationError
from core.storage import artifact_read_verified
from experiments import selectors, services
from experiments.forms import DatasetUploadForm, LaunchRunForm
from experiments.models import Artifact, DatasetUpload, DatasetVersion, Experiment, Run
from experiments.trainers import HISTORY_STEP, TRAINERS

_STATUS_COLORS = {
    Run.Status.QUEUED: "#6b7280",
    Run.Status.RUNNING: "#2563eb",
    Run.Status.FINISHED: "#16a34a",
    Run.Status.FAILED: "#dc2626",
    Run.Status.KILLED: "#9333ea",
}


def status_badge(run):
    label = badge(run.status, _STATUS_COLORS.get(run.status, GREY))
    if run.status in (Run.Status.RUNNING, Run.Status.QUEUED) and run.progress:
        return format_html(
            '{} <progress value="{}" max="100" title="{}" style="width:70px"></progress> {}%',
            label,
            round(run.progress * 100),
            run.progress_message,
            round(run.progress * 100),
        )
    return label


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    list_display = ["name", "run_count", "last_run_at", "mlflow_experiment_id", "created_at"]
    search_fields = ["name", "description"]
    readonly_fields = ["mlflow_experiment_id", "created_at", "runs_link"]
    fields = ["name", "description", "tags", "mlflow_experiment_id", "created_at", "runs_link"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(run_count=Count("runs"), last_run_at=Max("runs__created_at"))

    @admin.display(ordering="run_count")
    def run_count(self, obj):
        return obj.run_count

    @admin.display(ordering="last_run_at")
    def last_run_at(self, obj):
        return obj.last_run_at

    @admin.display(description="Runs")
    def runs_link(self, obj):
        url = reverse("admin:experiments_run_changelist") + "?" + urlencode({"experiment__id__exact": obj.pk})
        return format_html('<a href="{}">{} runs</a>', url, obj.runs.count())

    def has_delete_permission(self, request, obj=None):
        return False  # runs point at experiments; the trail stays whole

    def save_model(self, request, obj, form, change):
        """Through the service, which checks the role and audits the change."""
        try:
            services.experiment_save(experiment=obj, by=request.user)
        except ApplicationError as exc:
            self.message_user(request, str(exc), messages.ERROR)


@admin.register(DatasetVersion)
class DatasetVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "short_sha", "source", "target", "n_rows", "n_columns", "size_bytes", "created_at"]
    list_filter = ["source", "name"]
    search_fields = ["name", "sha256"]
    readonly_fields = [
        "name",
        "sha256",
        "source",
        "build_params",
        "target",
        "n_rows",
        "n_columns",
        "size_bytes",
        "schema_table",
        "created_by",
        "created_at",
    ]
    exclude = ["schema", "path"]

    @admin.display(description="sha256")
    def short_sha(self, obj):
        return obj.sha256[:12]

    @admin.display(description="Schema")
    def schema_table(self, obj):
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    column["name"] + (" (target)" if column["name"] == obj.target else ""),
                    column["dtype"],
                    _fmt(column.get("min")),
                    _fmt(column.get("max")),
                    column["null_count"],
                    ", ".join(column.get("categories", [])[:8]) or column.get("n_unique", ""),
                )
                for column in obj.schema["columns"]
            ),
        )
        balance = ", ".join(f"{label}: {count}" for label, count in obj.schema.get("class_balance", {}).items())
        return format_html(
            "<table><thead><tr><th>column</th><th>dtype</th><th>min</th><th>max</th><th>nulls</th>"
            "<th>categories / distinct</th></tr></thead><tbody>{}</tbody></table><p>Class balance: {}</p>",
            rows,
            balance,
        )

    def has_change_permission(self, request, obj=None):
        return False  # a version is its content: it is never edited

    def has_delete_permission(self, request, obj=None):
        return False

    def add_view(self, request, form_url="", extra_context=None):
        """Upload a CSV: the service checks the role, validates it, infers its schema and stores it by content hash."""
        form = DatasetUploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                outcome = services.dataset_version_upload_file(
                    name=form.cleaned_data["name"],
                    file=form.cleaned_data["file"],
                    target=form.cleaned_data["target"],
                    by=request.user,
                )
            except ApplicationError as exc:
                form.add_service_error(exc)
            else:
                version, created = outcome.version, outcome.created
                if outcome.upload is not None:
                    self.message_user(
                        request,
                        f"Received {outcome.upload.size_bytes:,} bytes: a worker is profiling them. The version "
                        "appears here once stored; Dataset uploads shows the progress or why it was refused.",
                    )
                    return redirect("admin:experiments_datasetupload_change", outcome.upload.pk)
                if created:
                    self.message_user(request, f"Stored {version}: {version.n_rows} rows, {version.n_columns} columns.")
                else:
                    self.message_user(request, f"This content is already stored as {version}.", messages.WARNING)
                return redirect("admin:experiments_datasetversion_change", version.pk)
        return admin_page(
            self,
            request,
            "Upload a CSV dataset",
            "admin/experiments/datasetversion/upload.html",
            form=form,
            has_view_permission=True,
        )


def _fmt(value):
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else value


class RunKindFilter(admin.SimpleListFilter):
    title = "kind"
    parameter_name = "kind"

    def lookups(self, request, model_admin):
        return [("top", "Runs and sweeps"), ("sweep", "Sweeps only"), ("child", "Sweep members")]

    def queryset(self, request, queryset):
        if self.value() == "top":
            return queryset.filter(parent__isnull=True)
        if self.value() == "sweep":
            return queryset.exclude(sweep_metric="")
        if self.value() == "child":
            return queryset.filter(parent__isnull=False)
        return queryset


# Runs are launched through the launch view, which calls the service; a run's record is written
# by its worker, never edited by hand.
@admin.register(DatasetUpload)
class DatasetUploadAdmin(admin.ModelAdmin):
    """Large CSVs a worker profiles: waiting, being profiled, stored (with the version) or refused (why).
    Read-only: an upload is made from the dataset versions' Add page."""

    list_display = ["name", "upload_status", "size", "stored_version", "error", "created_by", "created_at"]
    list_filter = ["status"]
    search_fields = ["name", "sha256"]
    readonly_fields = [
        "name",
        "target",
        "sha256",
        "size",
        "upload_status",
        "error",
        "field",
        "stored_version",
        "created_by",
        "created_at",
        "finished_at",
    ]
    exclude = ["path", "status", "version", "size_bytes"]

    _COLORS = {"PENDING": GREY, "PROFILING": "#1f6feb", "DONE": "#2da44e", "FAILED": "#cf222e"}

    @admin.display(description="size", ordering="size_bytes")
    def size(self, obj):
        return filesizeformat(obj.size_bytes)

    @admin.display(description="status", ordering="status")
    def upload_status(self, obj):
        return badge(obj.get_status_display(), self._COLORS[obj.status])

    @admin.display(description="version")
    def stored_version(self, obj):
        if obj.version_id is None:
            return ""
        url = reverse("admin:experiments_datasetversion_change", args=[obj.version_id])
        return format_html('<a href="{}">{}</a>', url, obj.version)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        upload = self.get_object(request, object_id)
        refresh = upload is not None and not upload.is_terminal  # until a worker has stored or refused it
        return super().change_view(request, object_id, form_url, {"refresh": refresh, **(extra_context or {})})

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm("experiments.view_datasetversion")


@admin.register(Run)
class RunAdmin(ServiceWrittenAdmin, admin.ModelAdmin):
    # What a run is sits in one column (name over experiment · algorithm · dataset), so its results fit a
    # 1280 px window beside the filters.
    list_display = [
        "run_column",
        "status_column",
        "accuracy",
        "f1_macro",
        "roc_auc",
        "log_loss",
        "duration",
        "mlflow_column",
    ]
    list_display_links = ["run_column"]
    list_filter = ["status", "algorithm", ("dataset", admin.RelatedOnlyFieldListFilter), "experiment", RunKindFilter]
    search_fields = ["name", "experiment__name", "mlflow_run_id", "celery_task_id"]
    list_select_related = ["experiment", "dataset"]
    date_hierarchy = "created_at"
    actions = ["compare_runs", "register_version", "kill_runs", "mirror_to_mlflow"]
    change_list_template = "admin/experiments/run/change_list.html"
    change_form_template = "admin/experiments/run/change_form.html"
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "experiment",
                    "name",
                    "status_column",
                    "progress_message",
                    "algorithm",
                    "dataset",
                    "parent",
                    "created_by",
                    "created_at",
                ]
            },
        ),
        ("Timing", {"fields": ["start_time", "end_time", "duration", "attempts", "celery_task_id"]}),
        ("Result", {"fields": ["error", "model_path", "model_sha256", "best_child", "sweep_metric"]}),
        ("MLflow", {"fields": ["mlflow_run_id", "mlflow_synced_at", "mlflow_sync_error"]}),
        ("Source", {"fields": ["source_commit"]}),
    ]

    accuracy = metric_column("accuracy", "accuracy")
    f1_macro = metric_column("f1_macro", "F1 (macro)")
    roc_auc = metric_column("roc_auc", "ROC AUC")
    log_loss = metric_column("log_loss", "log loss")

    def get_readonly_fields(self, request, obj=None):
        return [field for fieldset in self.fieldsets for field in fieldset[1]["fields"]]

    @admin.display(description="run", ordering="-id")
    def run_column(self, run):
        dataset = run.dataset.name if run.dataset else "–"
        return format_html(
            '#{} {}<span class="run-meta">{} · {} · {} · {}</span>',
            run.pk,
            run.name,
            run.experiment.name,
            run.algorithm,
            dataset,
            short_time(run.created_at),
        )

    @admin.display(description="status", ordering="status")
    def status_column(self, run):
        return status_badge(run)

    @admin.display(description="duration")
    def duration(self, run):
        seconds = run.duration_seconds
        return "–" if seconds is None else f"{seconds:.1f} s"

    @admin.display(description="MLflow")
    def mlflow_column(self, run):
        if run.mlflow_synced:
            return format_html('<span title="{}">✔</span>', run.mlflow_run_id)
        if run.mlflow_sync_error:
            return format_html('<span style="color:#dc2626" title="{}">not mirrored</span>', run.mlflow_sync_error)
        return "pending" if run.is_terminal else "–"

    def has_launch_permission(self, request):
        return request.user.has_perm("experiments.add_run")

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("launch/", wrap(self.launch_view), name="experiments_run_launch"),
            path("compare/", wrap(self.compare_view), name="experiments_run_compare"),
            path(
                "<int:run_id>/artifacts/<path:artifact_path>", wrap(self.artifact_view), name="experiments_run_artifact"
            ),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "can_launch": self.has_launch_permission(request)}
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        run = selectors.run_get(run_id=object_id) if str(object_id).isdigit() else None
        extra = {}
        if run is not None:
            histories = selectors.run_histories(run_ids=[run.pk]).get(run.pk, {})
            extra = {
                "run": run,
                "params": run.params.all(),
                "metric_rows": sorted(run.latest_metrics.items()),
                "charts": [
                    line_chart_svg({key: points}, title=key, x_label=HISTORY_STEP.get(run.algorithm, "step"))
                    for key, points in sorted(histories.items())
                ],
                "artifacts": run.artifacts.all(),
                "children": run.children.all(),
                "refresh": not run.is_terminal,
                "status_badge": status_badge(run),
            }
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    @admin.action(description="Compare selected runs")
    def compare_runs(self, request, queryset):
        ids = ",".join(str(pk) for pk in queryset.order_by("id").values_list("pk", flat=True)[:12])
        return redirect(reverse("admin:experiments_run_compare") + f"?ids={ids}")

    @admin.action(description="Register the selected run as a model version")
    def register_version(self, request, queryset):
        runs = list(queryset.values_list("pk", flat=True)[:2])
        if len(runs) != 1:
            self.message_user(request, "Select exactly one finished run to register.", messages.WARNING)
            return None
        return redirect(reverse("admin:registry_modelversion_register") + f"?run={runs[0]}")

    @admin.action(description="Stop selected runs")
    def kill_runs(self, request, queryset):
        stopped = []
        for run in queryset.exclude(status__in=Run.TERMINAL_STATUSES).order_by("id"):
            try:
                services.run_kill(run_id=run.pk, by=request.user)
            except ApplicationError as exc:  # it ended meanwhile, or it is someone else's
                self.message_user(request, str(exc), messages.WARNING)
            else:
                stopped.append(f"#{run.pk}")
        if stopped:
            self.message_user(request, f"Stopped {', '.join(stopped)}.")
        else:
            self.message_user(request, "None of the selected runs was queued or running.", messages.WARNING)

    @admin.action(description="Mirror selected runs to MLflow now")
    def mirror_to_mlflow(self, request, queryset):
        try:
            done, failed = services.runs_mirror_now(
                run_ids=list(queryset.values_list("pk", flat=True)), by=request.user
            )
        except ApplicationError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        self.message_user(
            request,
            f"{done} run(s) mirrored to MLflow." + (f" {failed} failed: see each run." if failed else ""),
            messages.SUCCESS if not failed else messages.WARNING,
        )

    def launch_view(self, request):
        """Launch a run or a sweep; the service checks the role, validates and queues it on the workers."""
        form = LaunchRunForm(request.POST or None, initial={"experiment": request.GET.get("experiment", "")})
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                sweep = services.sweep_grid_parse(data["sweep"]) if data["sweep"].strip() else None
                run = services.run_launch(
                    experiment=data["experiment"],
                    dataset=data["dataset"],
                    algorithm=data["algorithm"],
                    params=data["params"],
                    sweep=sweep,
                    sweep_metric=data["sweep_metric"],
                    n_samples=data["n_samples"],
                    seed=data["seed"],
                    name=data["name"],
                    by=request.user,
                )
            except ApplicationError as exc:
                form.add_service_error(exc)
            else:
                children = run.children.count()
                self.message_user(
                    request, f"Run #{run.pk} queued" + (f" with {children} sweep runs." if children else ".")
                )
                return redirect("admin:experiments_run_change", run.pk)
        return admin_page(
            self,
            request,
            "Launch a training run",
            "admin/experiments/run/launch.html",
            form=form,
            trainers=TRAINERS.values(),
        )

    def compare_view(self, request):
        try:
            ids = [int(part) for part in request.GET.get("ids", "").split(",") if part.strip()]
        except ValueError:
            ids = []
        if len(ids) < 2:
            self.message_user(request, "Select at least two runs to compare.", messages.WARNING)
            return redirect("admin:experiments_run_changelist")
        comparison = selectors.runs_compare(run_ids=ids)
        histories = selectors.run_histories(run_ids=ids)
        # Lines are labelled by what tells the runs apart: the params that differ.
        differing = [row["key"] for row in comparison["param_rows"] if row["differs"]]
        labels = {
            run.pk: " ".join([f"#{run.pk}"] + [f"{p.key}={p.value}" for p in run.params.all() if p.key in differing])
            for run in comparison["runs"]
        }
        # A history's step means what the algorithm says (trees, boosting stages, training rows): one chart
        # per metric and meaning, never two meanings on one axis.
        groups = {}
        for run in comparison["runs"]:
            for key, points in histories.get(run.pk, {}).items():
                groups.setdefault((key, HISTORY_STEP.get(run.algorithm, "step")), {})[labels[run.pk]] = points
        charts = [
            line_chart_svg(series, title=f"{key} by {x_label}", x_label=x_label, width=980, height=300, legend=True)
            for (key, x_label), series in sorted(groups.items())
        ]
        return admin_page(
            self, request, "Compare runs", "admin/experiments/run/compare.html", **comparison, charts=charts
        )

    def artifact_view(self, request, run_id, artifact_path):
        """Serve an artifact's bytes, only if they still match the checksum recorded for them."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        artifact = Artifact.objects.filter(run_id=run_id, path=artifact_path).first()
        if artifact is None:
            return HttpResponse(f"run {run_id} has no artifact {artifact_path}", status=404, content_type="text/plain")
        try:
            content = artifact_read_verified(f"runs/{run_id}/{artifact.path}", artifact.sha256)
        except ApplicationError as exc:
            return HttpResponse(str(exc), status=409, content_type="text/plain")
        content_type = mimetypes.guess_type(artifact.path)[0] or "application/octet-stream"
        response = HttpResponse(content, content_type=content_type)
        if not content_type.startswith(("image/", "text/", "application/json")):
            response["Content-Disposition"] = f'attachment; filename="{artifact.path.rsplit("/", 1)[-1]}"'
        return response
