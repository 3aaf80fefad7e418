import numpy as np
from django.conf import settings
from django.db import models
from django.db.models import Q

from registry.models import Environment


class Deployment(models.Model):
    """A version answering traffic of one environment: as the primary, a canary with a share, or a shadow."""

    Environment = Environment

    class Mode(models.TextChoices):
        PRIMARY = "primary"
        CANARY = "canary"
        SHADOW = "shadow"

    class Status(models.TextChoices):
        ACTIVE = "active"
        RETIRED = "retired"

    model = models.ForeignKey("registry.RegisteredModel", on_delete=models.PROTECT, related_name="deployments")
    version = models.ForeignKey("registry.ModelVersion", on_delete=models.PROTECT, related_name="deployments")
    environment = models.CharField(max_length=16, choices=Environment.choices)
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.PRIMARY)
    traffic_percent = models.FloatField(default=100.0, help_text="Share of requests a canary answers, 0 to 100.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE, db_index=True)
    endpoint_url = models.CharField(max_length=300)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["model__name", "environment", "mode", "-created_at"]
        constraints = [
            # One active deployment per model, environment and mode: one primary, one canary, one shadow.
            models.UniqueConstraint(
                fields=["model", "environment", "mode"], condition=Q(status="active"), name="one_active_per_mode"
            ),
            models.CheckConstraint(
                condition=Q(traffic_percent__gte=0) & Q(traffic_percent__lte=100), name="traffic_percent_0_100"
            ),
        ]
        permissions = [
            ("predict_any_version", "Can call any version of a model by number, whatever its stage"),
            ("give_feedback", "Can send the true label of a logged prediction"),
        ]

    def __str__(self):
        return f"{self.version} {self.environment}/{self.mode}"


class LastServed(models.Model):
    """The version that last answered as a model's primary in an environment, written by the serving
    processes when they load it: after a restart, a primary refused (its file changed or missing) falls
    back to this version instead of answering 409 to every request."""

    model = models.ForeignKey("registry.RegisteredModel", on_delete=models.CASCADE, related_name="+")
    environment = models.CharField(max_length=16, choices=Deployment.Environment.choices)
    version = models.ForeignKey("registry.ModelVersion", on_delete=models.CASCADE, related_name="+")
    served_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "last served version"
        constraints = [models.UniqueConstraint(fields=["model", "environment"], name="one_last_served_per_env")]

    def __str__(self):
        return f"{self.version} last served in {self.environment}"


class FloatVectorField(models.Field):
    """A vector of float64 (NaN where a value is missing): `float8[]` on PostgreSQL, where monitoring reads
    it ~3x faster than the same numbers out of JSON, and little-endian float64 bytes elsewhere (SQLite)."""

    description = "Vector of float64"

    def db_type(self, connection):
        return "double precision[]" if connection.vendor == "postgresql" else "blob"

    def from_db_value(self, value, expression, connection):
        if value is None:
            return None
        if isinstance(value, bytes | memoryview):
            return np.frombuffer(value, dtype="<f8").tolist()
        return [float("nan") if item is None else float(item) for item in value]

    def get_db_prep_value(self, value, connection, prepared=False):
        if value is None:
            return None
        values = [float("nan") if item is None else float(item) for item in value]
        if connection.vendor == "postgresql":
            return values
        return np.asarray(values, dtype="<f8").tobytes()


class PredictionLog(models.Model):
    """One row predicted: what came in, what went out, which version answered, and later the truth.

    On PostgreSQL the table is partitioned by day on created_at (serving migration 0004); old days are
    dropped whole after PREDICTION_LOG_RETENTION_DAYS (serving.predlog.prediction_log_retention_apply).
    """

    request_id = models.CharField(max_length=64)
    row = models.PositiveIntegerField(default=0, help_text="Position of the row in its request.")
    model_name = models.CharField(max_length=100)
    version = models.PositiveIntegerField()
    deployment_mode = models.CharField(max_length=16, blank=True, help_text="primary, canary, shadow or direct.")
    inputs = models.JSONField(null=True, blank=True)
    # The numeric features in the order of the version's signature, beside the JSON inputs, for monitoring.
    features = FloatVectorField(null=True, blank=True, editable=False)
    prediction = models.JSONField(null=True, blank=True)
    # Where the prediction stands among the version's classes (its signature's order): monitoring counts
    # classes from this integer instead of comparing JSON.
    predicted_index = models.SmallIntegerField(null=True, blank=True, editable=False)
    probabilities = models.JSONField(null=True, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    latency_ms = models.FloatField()
    error = models.TextField(blank=True)
    actual = models.JSONField(null=True, blank=True, help_text="The true label, sent back as feedback.")
    feedback_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        # Every index is paid on each logged row, so only those a reader uses: feedback finds rows by request
        # id (exact: no LIKE index), monitoring by model (the composite's prefix) and by time.
        indexes = [
            models.Index(fields=["request_id"], name="predlog_request_id"),
            models.Index(fields=["model_name", "version", "-created_at"]),
            # Monitoring finds the hours whose labels arrived since its last run (late feedback).
            models.Index(fields=["feedback_at"], condition=Q(feedback_at__isnull=False), name="predlog_feedback_at"),
            # ... and the refused requests of an hour, few among many, by kind.
            models.Index(fields=["created_at"], condition=~Q(error=""), name="predlog_errors"),
        ]

    def __str__(self):
        return f"{self.request_id}[{self.row}] {self.model_name} v{self.version}"


# The CRM connector's tables live in their own package and belong to this app.
from serving.crm.models import CrmRefresh, CrmSettings, Customer, SegmentChange  # noqa: E402

__all__ = ["CrmRefresh", "CrmSettings", "Customer", "Deployment", "PredictionLog", "SegmentChange"]
