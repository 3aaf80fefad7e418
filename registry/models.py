from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q

# Letters, digits, dot, dash and underscore: safe in URLs, MLflow model URIs and file paths.
model_name_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
    "Use letters, digits, '.', '-' and '_' (up to 100 characters, starting with a letter or digit).",
)


class Environment(models.TextChoices):
    """Where a version answers traffic: each environment has one primary, and may have a canary and a shadow."""

    PRODUCTION = "production"
    STAGING = "staging"


class RegisteredModel(models.Model):
    """A named model whose versions move through stages; mirrored to the MLflow registry under the same name."""

    name = models.CharField(max_length=100, unique=True, validators=[model_name_validator])
    description = models.TextField(blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    intended_use = models.TextField(blank=True, help_text="What the model is for, and what it must not be used for.")
    tags = models.JSONField(default=dict, blank=True)
    # The registration gate: {"accuracy": 0.95} refuses a run whose accuracy is below 0.95.
    # Metrics that are better small (losses, times, sizes) are read as maximums.
    metric_thresholds = models.JSONField(
        default=dict,
        blank=True,
        help_text='Registration gate, e.g. {"accuracy": 0.95, "log_loss": 0.3}: minimums, or maximums for '
        "losses, times and sizes. A run that misses one is refused.",
    )
    # Cleared by every registration and stage change; the MLflow sync sets it once MLflow matches.
    mlflow_synced_at = models.DateTimeField(null=True, blank=True)
    mlflow_sync_error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class ModelVersion(models.Model):
    """One registered model file: where it came from, what it expects, and which stage it is in."""

    class Stage(models.TextChoices):
        NONE = "None"
        STAGING = "Staging"
        PRODUCTION = "Production"
        ARCHIVED = "Archived"

    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="versions")
    version = models.PositiveIntegerField()
    run = models.ForeignKey("experiments.Run", on_delete=models.PROTECT, related_name="model_versions")
    dataset = models.ForeignKey("experiments.DatasetVersion", on_delete=models.PROTECT, related_name="+")
    metrics = models.JSONField(default=dict, help_text="The run's metrics when it was registered.")
    artifact_path = models.CharField(max_length=500, help_text="Relative to ARTIFACT_ROOT.")
    artifact_sha256 = models.CharField(max_length=64)
    # {"features": [{"name", "dtype"}...], "target": name, "classes": [...]}
    signature = models.JSONField()
    # Per feature: count, mean, std, min, max, quantiles and a histogram (numeric) or frequencies (categorical).
    reference_stats = models.JSONField()

    class ServingForm(models.TextChoices):
        ONNX = "onnx", "ONNX (onnxruntime)"
        SKLEARN = "sklearn", "scikit-learn pipeline"

    # The fast inference form, made and checked against the pipeline at registration.
    serving_form = models.CharField(max_length=16, choices=ServingForm.choices, default=ServingForm.SKLEARN)
    onnx_path = models.CharField(max_length=500, blank=True)
    onnx_sha256 = models.CharField(max_length=64, blank=True)
    onnx_max_abs_diff = models.FloatField(null=True, blank=True)
    serving_note = models.TextField(blank=True, help_text="Why this serving form: the conversion check's result.")
    stage = models.CharField(max_length=16, choices=Stage.choices, default=Stage.NONE, db_index=True)
    stage_changed_at = models.DateTimeField(null=True, blank=True)
    # When it last entered Production: a rollback goes back to the most recent one before the current.
    production_entered_at = models.DateTimeField(null=True, blank=True)
    description = models.TextField(blank=True)
    # Registered deliberately with features, classes or target unlike the model's other versions.
    breaking_change = models.BooleanField(
        default=False, help_text="Its signature differs from the version it was compared with at registration."
    )
    signature_changes = models.JSONField(
        default=list, blank=True, help_text="How its signature differs from the model's production (or latest) version."
    )
    mlflow_version = models.CharField(max_length=32, blank=True, help_text="Its version number in MLflow.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model__name", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["model", "version"], name="model_version_unique"),
            # The database, not only the code, keeps one Production and one Staging version per model.
            models.UniqueConstraint(
                fields=["model"], condition=Q(stage="Production"), name="one_production_version_per_model"
            ),
            models.UniqueConstraint(
                fields=["model"], condition=Q(stage="Staging"), name="one_staging_version_per_model"
            ),
        ]
        permissions = [
            ("request_promotion", "Can request the promotion of a model version"),
            ("approve_promotion", "Can approve or reject a promotion request"),
            ("override_compliance", "Can promote a non-compliant version to Production, with a justification"),
            ("emergency_rollback", "Can roll production back without a second approval"),
        ]

    def __str__(self):
        return f"{self.model.name} v{self.version}"


class PromotionRequest(models.Model):
    """A request to move a version to a stage, decided by a second person."""

    class Status(models.TextChoices):
        PENDING = "PENDING"
        APPROVED = "APPROVED"
        REJECTED = "REJECTED"

    class Kind(models.TextChoices):
        PROMOTION = "promotion", "Promotion (stage change)"
        ROLLBACK = "rollback", "Rollback of production"
        CANARY = "canary", "Canary (a share of an environment's traffic)"
        SHADOW = "shadow", "Shadow (predicts on every request, never answers)"

    TRAFFIC_KINDS = (Kind.CANARY, Kind.SHADOW)

    class TargetStage(models.TextChoices):
        STAGING = "Staging"
        PRODUCTION = "Production"
        ARCHIVED = "Archived"

    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="promotion_requests")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.PROMOTION)
    # Promotions and rollbacks move the version to a stage; canary and shadow requests put it on
    # an environment's traffic beside the primary and leave its stage alone.
    to_stage = models.CharField(max_length=16, choices=TargetStage.choices, blank=True)
    environment = models.CharField(max_length=16, choices=Environment.choices, blank=True)
    traffic_percent = models.FloatField(null=True, blank=True, help_text="Canary: the share of requests it answers.")
    from_stage = models.CharField(max_length=16, choices=ModelVersion.Stage.choices)
    reason = models.TextField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    requested_at = models.DateTimeField(auto_now_add=True)
    compliance = models.ForeignKey(
        "governance.ComplianceEvaluation", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    comment = models.TextField(blank=True)
    override_justification = models.TextField(
        blank=True, help_text="Why a non-compliant version went to Production anyway."
    )

    class Meta:
        ordering = ["-requested_at", "-id"]
        constraints = [
            # One open request per version and target: a second one would be decided twice.
            models.UniqueConstraint(
                fields=["version", "to_stage"],
                condition=Q(status="PENDING", kind__in=["promotion", "rollback"]),
                name="one_pending_request_per_target",
            ),
            models.UniqueConstraint(
                fields=["version", "kind", "environment"],
                condition=Q(status="PENDING", kind__in=["canary", "shadow"]),
                name="one_pending_traffic_request",
            ),
        ]

    def __str__(self):
        return f"#{self.pk} {self.version} → {self.target}"

    @property
    def target(self):
        """What the request asks for: a stage, or a share of an environment's traffic."""
        if self.kind == self.Kind.CANARY:
            return f"{self.traffic_percent:g}% canary in {self.environment}"
        if self.kind == self.Kind.SHADOW:
            return f"shadow in {self.environment}"
        return self.to_stage

    @property
    def is_traffic(self):
        return self.kind in self.TRAFFIC_KINDS
