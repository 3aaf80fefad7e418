"""REST API of the experiments app: one thin view per operation, its own serializers."""

from django.urls import path, reverse
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import InvalidInput
from core.parsers import SafeJSONParser
from experiments import selectors, services
from experiments.datasets import CUSTOMER_CHURN_MAX_SAMPLES
from experiments.models import DatasetUpload, DatasetVersion, Run
from experiments.trainers import TRAINERS


class ExperimentOutput(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    description = serializers.CharField()
    tags = serializers.DictField()
    run_count = serializers.IntegerField()
    mlflow_experiment_id = serializers.CharField()
    created_at = serializers.DateTimeField()


class DatasetOutput(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    sha256 = serializers.CharField()
    source = serializers.CharField()
    build_params = serializers.DictField()
    target = serializers.CharField()
    n_rows = serializers.IntegerField()
    n_columns = serializers.IntegerField()
    size_bytes = serializers.IntegerField()
    schema = serializers.JSONField()
    created_at = serializers.DateTimeField()


class DatasetUploadOutput(DatasetOutput):
    created = serializers.BooleanField(help_text="false: this exact content was already stored (this version)")
    note = serializers.CharField(help_text="why nothing new was stored, and under which name to use it; else empty")


class DatasetUploadStatusOutput(serializers.Serializer):
    upload = serializers.IntegerField(source="pk")
    name = serializers.CharField()
    target = serializers.CharField()
    sha256 = serializers.CharField()
    size_bytes = serializers.IntegerField()
    status = serializers.ChoiceField(choices=DatasetUpload.Status.choices)
    error = serializers.CharField(help_text="why the CSV was refused (FAILED); else empty")
    field = serializers.CharField(help_text="the input the error is about")
    version = DatasetOutput(allow_null=True, help_text="the version stored (DONE)")
    status_url = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)

    def get_status_url(self, upload) -> str:
        return reverse("dataset-upload-detail", args=[upload.pk])


class RunSummaryOutput(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    experiment = serializers.CharField(source="experiment.name")
    status = serializers.CharField()
    algorithm = serializers.CharField()
    dataset = serializers.CharField(allow_null=True)
    progress = serializers.FloatField()
    metrics = serializers.DictField(source="latest_metrics")
    created_at = serializers.DateTimeField()


class RunOutput(RunSummaryOutput):
    parent_id = serializers.IntegerField(allow_null=True)
    progress_message = serializers.CharField()
    params = serializers.SerializerMethodField()
    tags = serializers.SerializerMethodField()
    artifacts = serializers.SerializerMethodField()
    children = RunSummaryOutput(many=True)
    sweep_metric = serializers.CharField()
    best_child_id = serializers.IntegerField(allow_null=True)
    start_time = serializers.DateTimeField(allow_null=True)
    end_time = serializers.DateTimeField(allow_null=True)
    duration_seconds = serializers.FloatField(allow_null=True)
    attempts = serializers.IntegerField()
    error = serializers.CharField()
    source_commit = serializers.CharField()
    celery_task_id = serializers.CharField()
    model_sha256 = serializers.CharField()
    mlflow_run_id = serializers.CharField()
    mlflow_synced = serializers.BooleanField()
    mlflow_sync_error = serializers.CharField()

    def get_params(self, run) -> dict:
        return {p.key: p.value for p in run.params.all()}

    def get_tags(self, run) -> dict:
        return {t.key: t.value for t in run.tags.all()}

    def get_artifacts(self, run) -> list:
        return [{"path": a.path, "size_bytes": a.size_bytes, "sha256": a.sha256} for a in run.artifacts.all()]


class ExperimentListApi(ListAPIView):
    serializer_class = ExperimentOutput

    def get_queryset(self):
        return selectors.experiment_list()


class DatasetListCreateApi(ListAPIView):
    """List dataset versions, or upload a CSV as a new one (multipart: file, name, target)."""

    serializer_class = DatasetOutput
    parser_classes = [MultiPartParser, FormParser, SafeJSONParser]
    queryset = DatasetVersion.objects.all()

    class UploadInput(serializers.Serializer):
        file = serializers.FileField()
        name = serializers.CharField(max_length=200)
        target = serializers.CharField(max_length=200)

    @extend_schema(
        request={"multipart/form-data": UploadInput},
        responses={201: DatasetUploadOutput, 200: DatasetUploadOutput, 202: DatasetUploadStatusOutput},
        description="201 with the new version; 200 with the version already holding this exact content, "
        "and a `note` when it is stored under another name (the name given is not recorded). A file over "
        "DATASET_INLINE_MAX_BYTES is streamed to disk and profiled by a worker: 202 with the upload's "
        "`status_url`, which says DONE with the version, or FAILED with the error and the field.",
    )
    def post(self, request):
        serializer = self.UploadInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        outcome = services.dataset_version_upload_file(**serializer.validated_data, by=request.user)
        if outcome.upload is not None:
            body = DatasetUploadStatusOutput(outcome.upload).data
            return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["status_url"]})
        version, created = outcome.version, outcome.created
        name = serializer.validated_data["name"].strip()
        note = ""
        if not created:
            note = f"this content is already stored as {version}"
            if version.name != name:
                note += f"; {name!r} was not recorded: use dataset {version.name!r} or {version.sha256[:12]!r}"
        body = DatasetUploadOutput({**DatasetOutput(version).data, "created": created, "note": note}).data
        return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class DatasetUploadDetailApi(APIView):
    """A large upload's progress: PENDING, PROFILING, then DONE with its version or FAILED with the reason."""

    @extend_schema(responses=DatasetUploadStatusOutput)
    def get(self, request, upload_id):
        return Response(DatasetUploadStatusOutput(selectors.dataset_upload_get(upload_id=upload_id)).data)


class RunListCreateApi(ListAPIView):
    """List runs (filter by experiment and status), or launch one: 202 with the run id."""

    serializer_class = RunSummaryOutput

    class LaunchInput(serializers.Serializer):
        experiment = serializers.CharField(max_length=200)
        dataset = serializers.CharField(max_length=200)
        algorithm = serializers.ChoiceField(choices=sorted(TRAINERS))
        params = serializers.DictField(required=False, default=dict)
        sweep = serializers.DictField(child=serializers.ListField(allow_empty=False), required=False)
        sweep_metric = serializers.CharField(required=False, default="accuracy")
        n_samples = serializers.IntegerField(required=False, min_value=10, max_value=CUSTOMER_CHURN_MAX_SAMPLES)
        seed = serializers.IntegerField(required=False, min_value=0)
        name = serializers.CharField(required=False, default="", allow_blank=True, max_length=200)

    def get_queryset(self):
        status_filter = self.request.query_params.get("status")
        if status_filter and status_filter not in Run.Status.values:
            raise InvalidInput(f"must be one of {', '.join(Run.Status.values)}", field="status")
        return selectors.run_list(
            experiment=self.request.query_params.get("experiment"),
            status=status_filter,
            parents_only=self.request.query_params.get("top_level") in ("1", "true"),
        )

    @extend_schema(
        request=LaunchInput,
        responses={
            202: inline_serializer(
                "LaunchOutput",
                {
                    "id": serializers.IntegerField(),
                    "status": serializers.CharField(),
                    "url": serializers.CharField(),
                    "children": serializers.ListField(child=serializers.IntegerField()),
                },
            )
        },
    )
    def post(self, request):
        serializer = self.LaunchInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        run = services.run_launch(**serializer.validated_data, by=request.user)
        return Response(
            {
                "id": run.pk,
                "status": run.status,
                "url": request.build_absolute_uri(f"/api/v1/runs/{run.pk}"),
                "children": list(run.children.order_by("id").values_list("id", flat=True)),
            },
            status=status.HTTP_202_ACCEPTED,
        )


class RunDetailApi(APIView):
    @extend_schema(responses=RunOutput)
    def get(self, request, run_id):
        return Response(RunOutput(selectors.run_get(run_id=run_id)).data)


class RunKillApi(APIView):
    """Stop a queued or running run (a sweep stops its unfinished members too); 409 if it already ended."""

    class KillInput(serializers.Serializer):
        reason = serializers.CharField(required=False, default="", allow_blank=True, max_length=2000)

    @extend_schema(request=KillInput, responses=RunOutput)
    def post(self, request, run_id):
        serializer = self.KillInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.run_kill(run_id=run_id, by=request.user, reason=serializer.validated_data["reason"])
        return Response(RunOutput(selectors.run_get(run_id=run_id)).data)


class MetricHistoryApi(APIView):
    @extend_schema(
        responses=inline_serializer(
            "MetricHistory",
            {
                "run_id": serializers.IntegerField(),
                "key": serializers.CharField(),
                "history": serializers.ListField(child=serializers.DictField()),
            },
        )
    )
    def get(self, request, run_id, key):
        points = selectors.run_metric_history(run_id=run_id, key=key)
        return Response(
            {
                "run_id": run_id,
                "key": key,
                "history": [{"step": p.step, "value": p.value, "timestamp": p.timestamp} for p in points],
            }
        )


urlpatterns = [
    path("experiments", ExperimentListApi.as_view(), name="experiment-list"),
    path("datasets", DatasetListCreateApi.as_view(), name="dataset-list"),
    path("dataset-uploads/<int:upload_id>", DatasetUploadDetailApi.as_view(), name="dataset-upload-detail"),
    path("runs", RunListCreateApi.as_view(), name="run-list"),
    path("runs/<int:run_id>", RunDetailApi.as_view(), name="run-detail"),
    path("runs/<int:run_id>/kill", RunKillApi.as_view(), name="run-kill"),
    path("runs/<int:run_id>/metrics/<str:key>", MetricHistoryApi.as_view(), name="run-metric-history"),
]
