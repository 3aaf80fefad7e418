"""What monitoring stores: each version's drift reference, hourly aggregates and feature sketches of the
prediction log, drift results, and the state of its scheduled jobs.

Rows are keyed by model name and version number as the prediction log is, so they outlive the log's
raw rows (dropped after PREDICTION_LOG_RETENTION_DAYS).
"""

from django.db import models

from monitoring.stattests import Kind, Method


class DriftReference(models.Model):
    """What drift needs from a version's training data, built once (at registration, or by the backfill)."""

    version = models.OneToOneField("registry.ModelVersion", on_delete=models.CASCADE, related_name="drift_reference")
    dataset = models.CharField(max_length=300, help_text="The training dataset the reference was made from.")
    n_rows = models.PositiveIntegerField()
    # The prediction log's typed vector: names of the numeric features, in its order.
    vector_layout = models.JSONField(default=list)
    validation_accuracy = models.FloatField(null=True, blank=True)
    validation_rows = models.PositiveIntegerField(default=0)
    # Confidence-based performance estimation (NannyML's CBPE): per predicted class, the isotonic map from
    # the model's confidence to the chance it is right, fitted on the held-out split at registration.
    calibration = models.JSONField(default=dict, blank=True)
    build_seconds = models.FloatField(default=0.0)
    built_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"reference of {self.version}"


class ReferenceColumn(models.Model):
    """One column of a reference: sorted values (numeric) or category counts, and the sketch's fixed bins."""

    class Role(models.TextChoices):
        FEATURE = "feature"
        PREDICTION = "prediction", "predicted class (reference: training labels)"
        CONFIDENCE = "confidence", "confidence (reference: held-out predictions)"

    reference = models.ForeignKey(DriftReference, on_delete=models.CASCADE, related_name="columns")
    name = models.CharField(max_length=200)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.FEATURE)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    n = models.PositiveIntegerField(help_text="Values after dropping nulls, NaN and ±inf.")
    nulls = models.PositiveIntegerField(default=0)
    integer = models.BooleanField(default=False)
    std = models.FloatField(null=True, blank=True)
    minimum = models.FloatField(null=True, blank=True)
    maximum = models.FloatField(null=True, blank=True)
    # Numeric: every finite value, sorted, as little-endian float64 (a histogram is then a binary search).
    sorted_values = models.BinaryField(null=True, blank=True, editable=False)
    # Categorical: {category: count}.
    counts = models.JSONField(null=True, blank=True)
    # The sketch's fixed inner bin edges (reference percentiles, deduplicated), and for each of the bins
    # (below the first edge, between edges, above the last) the decile of the reference it belongs to.
    sketch_edges = models.JSONField(default=list, blank=True)
    sketch_groups = models.JSONField(default=list, blank=True)
    reference_bin_counts = models.JSONField(default=list, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["reference", "role", "name"], name="reference_column_unique")]
        ordering = ["reference", "role", "id"]

    def __str__(self):
        return f"{self.reference.version} {self.role} {self.name}"


class HourlyAggregate(models.Model):
    """One hour of one version's traffic in one deployment mode, summed from the prediction log."""

    model_name = models.CharField(max_length=100)
    version = models.PositiveIntegerField(help_text="0: refused before a version was chosen.")
    deployment_mode = models.CharField(max_length=16, help_text="primary, canary, shadow, direct; blank if refused.")
    hour = models.DateTimeField()
    requests = models.PositiveIntegerField(default=0)
    rows = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    error_kinds = models.JSONField(default=dict, blank=True)
    latency_p50_ms = models.FloatField(null=True, blank=True)
    latency_p95_ms = models.FloatField(null=True, blank=True)
    latency_p99_ms = models.FloatField(null=True, blank=True)
    # Request counts on fixed log-spaced latency bins (see monitoring.services.aggregates), so a day's
    # percentiles come from the sum of its hours.
    latency_histogram = models.JSONField(default=dict, blank=True)
    confidence_sum = models.FloatField(default=0.0)
    confidence_histogram = models.JSONField(default=list, blank=True, help_text="10 bins of 0.1 from 0 to 1.")
    class_counts = models.JSONField(default=dict, blank=True)
    labelled = models.PositiveIntegerField(default=0)
    correct = models.PositiveIntegerField(default=0)
    confusion = models.JSONField(default=dict, blank=True, help_text="{actual: {predicted: rows}}")
    # Sum over the hour's rows of the calibrated confidence of the predicted class (CBPE's expected correct).
    expected_correct = models.FloatField(null=True, blank=True)
    computed_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["model_name", "version", "deployment_mode", "hour"], name="hourly_aggregate_unique"
            )
        ]
        indexes = [models.Index(fields=["model_name", "hour"])]
        ordering = ["model_name", "-hour", "version", "deployment_mode"]

    def __str__(self):
        return f"{self.model_name} v{self.version} {self.deployment_mode} {self.hour:%Y-%m-%d %H}:00"

    @property
    def error_rate(self):
        return self.errors / self.requests if self.requests else None


class FleetOverview(HourlyAggregate):
    """No table of its own: the admin's entry for the fleet overview and each model's monitoring page."""

    class Meta:
        proxy = True
        default_permissions = ()  # readers of the registry read it (monitoring.dashboards checks)
        verbose_name = verbose_name_plural = "fleet overview"


class Report(HourlyAggregate):
    """No table of its own: the admin's entry for the experiment and deployment reports."""

    class Meta:
        proxy = True
        default_permissions = ()  # monitoring.reports checks the reader's permissions
        verbose_name = "report"
        verbose_name_plural = "reports"


class FeatureSketch(models.Model):
    """One hour of one column of one version's inputs, on the reference's fixed bins: sketches add up."""

    model_name = models.CharField(max_length=100)
    version = models.PositiveIntegerField()
    hour = models.DateTimeField()
    name = models.CharField(max_length=200)
    role = models.CharField(max_length=16, choices=ReferenceColumn.Role.choices, default=ReferenceColumn.Role.FEATURE)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    n = models.PositiveIntegerField(default=0, help_text="Finite (numeric) or non-null values.")
    nulls = models.PositiveIntegerField(default=0, help_text="Nulls and NaN.")
    infinite = models.PositiveIntegerField(default=0)
    minimum = models.FloatField(null=True, blank=True)
    maximum = models.FloatField(null=True, blank=True)
    total = models.FloatField(default=0.0)
    total_squares = models.FloatField(default=0.0)
    bin_counts = models.JSONField(default=list, blank=True)
    counts = models.JSONField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["model_name", "version", "hour", "role", "name"], name="feature_sketch_unique"
            )
        ]
        indexes = [models.Index(fields=["model_name", "version", "hour"])]
        ordering = ["model_name", "-hour", "name"]

    def __str__(self):
        return f"{self.model_name} v{self.version} {self.name} {self.hour:%Y-%m-%d %H}:00"


class DriftRun(models.Model):
    """One drift computation of a version over a window: its verdict and, in DriftResult, each column's."""

    class Computation(models.TextChoices):
        EXACT = "exact", "exact (raw window, Evidently's numbers)"
        SKETCH = "sketch", "sketch (hourly sketches on the reference's fixed bins)"

    class Status(models.TextChoices):
        OK = "ok"
        NOT_ENOUGH_DATA = "not_enough_data", "not enough data"
        NO_REFERENCE = "no_reference", "no reference"

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule"
        API = "api"
        CLI = "cli"
        ADMIN = "admin"

    model_name = models.CharField(max_length=100)
    version = models.PositiveIntegerField()
    window = models.CharField(max_length=32, help_text="As asked: 1h, 24h, 7d, or from..to.")
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    kind = models.CharField(max_length=16, choices=Computation.choices, default=Computation.EXACT)
    method = models.CharField(max_length=16, choices=Method.choices, default=Method.AUTO)
    status = models.CharField(max_length=24, choices=Status.choices)
    message = models.TextField(blank=True)
    rows = models.PositiveIntegerField(default=0)
    reference_rows = models.PositiveIntegerField(default=0)
    dataset_drift = models.BooleanField(null=True)
    share_drifted = models.FloatField(null=True, blank=True)
    n_drifted = models.PositiveIntegerField(default=0)
    n_columns = models.PositiveIntegerField(default=0)
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.SCHEDULE)
    seconds = models.FloatField(default=0.0)
    computed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["model_name", "window", "-computed_at"])]
        ordering = ["-computed_at", "-id"]

    def __str__(self):
        return f"{self.model_name} v{self.version} {self.window} ({self.kind}) {self.status}"


class DriftResult(models.Model):
    """One column's drift in a run, by one method."""

    run = models.ForeignKey(DriftRun, on_delete=models.CASCADE, related_name="results")
    name = models.CharField(max_length=200)
    role = models.CharField(max_length=16, choices=ReferenceColumn.Role.choices, default=ReferenceColumn.Role.FEATURE)
    method = models.CharField(max_length=16, choices=Method.choices)
    score = models.FloatField(null=True, blank=True, help_text="A p-value for KS, chi-square and z.")
    threshold = models.FloatField(null=True, blank=True)
    drifted = models.BooleanField(null=True, help_text="Empty when the column could not be tested (note says why).")
    verdict = models.BooleanField(default=False, help_text="This method decides the column (the default test).")
    reference_rows = models.PositiveIntegerField(default=0)
    current_rows = models.PositiveIntegerField(default=0)
    note = models.CharField(max_length=300, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["run", "role", "id"]

    def __str__(self):
        return f"{self.name} ({self.method})"


class MonitoringJob(models.Model):
    """One scheduled job for one model: whether it runs now, how far it got, and what it found last."""

    class Job(models.TextChoices):
        AGGREGATE = "aggregate", "hourly aggregates and sketches"
        DRIFT = "drift", "drift of the last 24 hours"

    class Status(models.TextChoices):
        IDLE = "idle"
        RUNNING = "running"
        OK = "ok"
        FAILED = "failed"

    job = models.CharField(max_length=16, choices=Job.choices)
    model_name = models.CharField(max_length=100)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.IDLE)
    progress = models.FloatField(default=0.0, help_text="0 to 1.")
    progress_message = models.CharField(max_length=200, blank=True)
    # Aggregates: every hour before this one is complete (late rows of the last hours are recomputed).
    watermark = models.DateTimeField(null=True, blank=True)
    # Late feedback: labels given after this moment move their hours' accuracy, so those hours are redone.
    feedback_seen_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True, help_text="SQLite: who runs it holds it until then.")
    runs = models.PositiveIntegerField(default=0)
    last_result = models.JSONField(default=dict, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "model_name"], name="monitoring_job_unique")]
        ordering = ["model_name", "job"]

    def __str__(self):
        return f"{self.get_job_display()} of {self.model_name}"
