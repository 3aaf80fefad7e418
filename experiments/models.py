from django.conf import settings
from django.db import models
from django.db.models import Q


class Experiment(models.Model):
    """A named group of runs, mirrored to an MLflow experiment of the same name."""

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    tags = models.JSONField(default=dict, blank=True)
    mlflow_experiment_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class DatasetVersion(models.Model):
    """One exact content of a dataset, identified by the sha256 of its CSV bytes."""

    class Source(models.TextChoices):
        BUILTIN = "builtin", "Built-in"
        UPLOAD = "upload", "Uploaded CSV"
        MLFLOW = "mlflow", "Imported from MLflow"

    name = models.CharField(max_length=200, db_index=True)
    sha256 = models.CharField(max_length=64, unique=True)
    source = models.CharField(max_length=16, choices=Source.choices)
    # For built-in datasets: how it was made (n_samples, seed), so it can be made again.
    build_params = models.JSONField(default=dict, blank=True)
    target = models.CharField(max_length=200)
    n_rows = models.PositiveIntegerField()
    n_columns = models.PositiveIntegerField()
    size_bytes = models.PositiveBigIntegerField()
    # Columns with dtype, range, null count, categories; the target's class balance.
    schema = models.JSONField()
    path = models.CharField(max_length=500, help_text="CSV file, relative to ARTIFACT_ROOT.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.name}@{self.sha256[:12]}"

    @property
    def feature_names(self):
        return [column["name"] for column in self.schema["columns"] if column["name"] != self.target]


class DatasetUpload(models.Model):
    """A CSV too large to profile in the web process (over DATASET_INLINE_MAX_BYTES): streamed to disk,
    then parsed, validated and stored as a dataset version by a worker."""

    class Status(models.TextChoices):
        PENDING = "PENDING", "Waiting for a worker"
        PROFILING = "PROFILING", "Being profiled"
        DONE = "DONE", "Stored"
        FAILED = "FAILED", "Refused"

    name = models.CharField(max_length=200)
    target = models.CharField(max_length=200)
    sha256 = models.CharField(max_length=64)
    size_bytes = models.PositiveBigIntegerField()
    path = models.CharField(max_length=500, help_text="The staged CSV, relative to ARTIFACT_ROOT (removed once done).")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True)
    field = models.CharField(max_length=200, blank=True, help_text="The input the error is about.")
    version = models.ForeignKey(DatasetVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"upload {self.pk} of {self.name} ({self.get_status_display().lower()})"

    @property
    def is_terminal(self):
        return self.status in (self.Status.DONE, self.Status.FAILED)


class Run(models.Model):
    """One training run, or the parent of a sweep whose children are the runs."""

    class Status(models.TextChoices):
        QUEUED = "QUEUED"
        RUNNING = "RUNNING"
        FINISHED = "FINISHED"
        FAILED = "FAILED"
        KILLED = "KILLED"

    TERMINAL_STATUSES = (Status.FINISHED, Status.FAILED, Status.KILLED)

    experiment = models.ForeignKey(Experiment, on_delete=models.PROTECT, related_name="runs")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="children")
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    dataset = models.ForeignKey(DatasetVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="runs")
    algorithm = models.CharField(max_length=64, db_index=True)
    # For a sweep parent: the metric that picks the best child, and whether higher is better.
    sweep_metric = models.CharField(max_length=64, blank=True)
    best_child = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    progress = models.FloatField(default=0.0, help_text="0 to 1.")
    progress_message = models.CharField(max_length=200, blank=True)
    start_time = models.DateTimeField(null=True, blank=True)
    end_time = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    celery_task_id = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    source_commit = models.CharField(max_length=40, blank=True, help_text="Git commit of the code that ran.")
    # The last value of each metric, kept beside the history for list columns and sorting.
    latest_metrics = models.JSONField(default=dict, blank=True)
    model_path = models.CharField(max_length=500, blank=True, help_text="Relative to ARTIFACT_ROOT.")
    model_sha256 = models.CharField(max_length=64, blank=True)
    mlflow_run_id = models.CharField(max_length=64, blank=True, db_index=True)
    mlflow_synced_at = models.DateTimeField(null=True, blank=True)
    mlflow_sync_error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["experiment", "-created_at"])]
        constraints = [
            models.CheckConstraint(condition=Q(progress__gte=0) & Q(progress__lte=1), name="run_progress_0_1"),
        ]
        permissions = [("stop_any_run", "Can stop a run someone else launched")]

    def __str__(self):
        return f"#{self.pk} {self.name}"

    @property
    def is_sweep(self):
        return bool(self.sweep_metric)

    @property
    def is_terminal(self):
        return self.status in self.TERMINAL_STATUSES

    @property
    def duration_seconds(self):
        if self.start_time and self.end_time:
            return (self.end_time - self.start_time).total_seconds()
        return None

    @property
    def mlflow_synced(self):
        return self.mlflow_synced_at is not None


class Param(models.Model):
    """A run's hyperparameter; write-once, as in MLflow."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="params")
    key = models.CharField(max_length=250)
    value = models.CharField(max_length=6000)

    class Meta:
        ordering = ["key"]
        constraints = [models.UniqueConstraint(fields=["run", "key"], name="param_unique_per_run")]

    def __str__(self):
        return f"{self.key}={self.value}"


class Metric(models.Model):
    """One point of a metric's history: value at a step and a time."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="metrics")
    key = models.CharField(max_length=250)
    value = models.FloatField()
    step = models.BigIntegerField(default=0)
    timestamp = models.DateTimeField()

    class Meta:
        ordering = ["key", "step", "timestamp"]
        indexes = [models.Index(fields=["run", "key", "step"])]

    def __str__(self):
        return f"{self.key}[{self.step}]={self.value}"


class RunTag(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="tags")
    key = models.CharField(max_length=250)
    value = models.CharField(max_length=5000)

    class Meta:
        ordering = ["key"]
        constraints = [models.UniqueConstraint(fields=["run", "key"], name="tag_unique_per_run")]

    def __str__(self):
        return f"{self.key}={self.value}"


class Artifact(models.Model):
    """A file a run produced, stored under ARTIFACT_ROOT with its checksum."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="artifacts")
    path = models.CharField(max_length=500, help_text="Relative to the run's artifact directory.")
    size_bytes = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)

    class Meta:
        ordering = ["path"]
        constraints = [models.UniqueConstraint(fields=["run", "path"], name="artifact_unique_per_run")]

    def __str__(self):
        return self.path
