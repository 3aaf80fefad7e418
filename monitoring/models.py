"""What monitoring stores: each version's drift reference, hourly aggregates and feature sketches of the
prediction log, drift results, the state of its scheduled jobs; alert rules, alerts and their e-mails;
retraining policies and retrainings.

Rows are keyed by model name and version number as the prediction log is, so they outlive the log's
raw rows (dropped after PREDICTION_LOG_RETENTION_DAYS).
"""

from django.conf import settings
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


# --- Alerts -------------------------------------------------------------------------------------------


class AlertRule(models.Model):
    """A condition on what monitoring stores that should wake someone: per model, or for every model.

    A model's own rule of a kind replaces the default (model empty) rule of that kind. Every rule needs a
    minimum sample and must hold for `for_evaluations` consecutive evaluations before it fires; the drift
    rules also need an effect size at least `effect_size_floor`, so a p-value alone never fires.
    """

    class Kind(models.TextChoices):
        ACCURACY_DROP = "accuracy_drop", "accuracy drop (live or estimated accuracy below validation)"
        LATENCY = "latency", "latency (p95 over its baseline)"
        ERROR_RATE = "error_rate", "error rate"
        DATA_DRIFT = "data_drift", "data drift (dataset, or named features)"
        PREDICTION_DRIFT = "prediction_drift", "prediction drift (predicted classes or confidence)"
        NO_TRAFFIC = "no_traffic", "no traffic"

    class AccuracySource(models.TextChoices):
        LIVE = "live", "live (from feedback)"
        ESTIMATED = "estimated", "estimated (CBPE, before labels arrive)"

    name = models.CharField(max_length=200, unique=True)
    model = models.ForeignKey(
        "registry.RegisteredModel",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="alert_rules",
        help_text="Leave empty for a default rule of every model (a model's own rule of the kind replaces it).",
    )
    kind = models.CharField(max_length=24, choices=Kind.choices)
    enabled = models.BooleanField(default=True)
    threshold = models.FloatField(
        help_text="accuracy drop: the largest drop below validation accuracy (0.05); latency: the largest ratio "
        "of p95 to its baseline (2); error rate: the largest share of failed requests (0.1); data drift: the "
        "share of drifted features that makes the dataset drift (0.5; ignored with named features); prediction "
        "drift and no traffic: unused."
    )
    window_hours = models.PositiveIntegerField(
        default=24, help_text="The hours of aggregates each evaluation reads (no traffic: the silent period)."
    )
    min_samples = models.PositiveIntegerField(
        default=100,
        help_text="Below it the evaluation says 'not enough data' and the alert's state stays: labelled rows "
        "(live accuracy), rows (estimated accuracy, drift), requests (latency, error rate).",
    )
    for_evaluations = models.PositiveSmallIntegerField(
        default=2, help_text="Consecutive evaluations the condition must hold before the alert fires."
    )
    effect_size_floor = models.FloatField(
        default=0.1,
        help_text="Drift: a column counts only if its effect size (PSI, Jensen–Shannon or normalised Wasserstein) "
        "is at least this, whatever the p-value says.",
    )
    features = models.JSONField(
        default=list, blank=True, help_text="Data drift: feature names (any of them drifting fires); empty: dataset."
    )
    accuracy_source = models.CharField(max_length=16, choices=AccuracySource.choices, default=AccuracySource.LIVE)
    remind_every_hours = models.PositiveIntegerField(
        default=4, help_text="While firing, a reminder at most this often (0: never)."
    )
    email_to = models.TextField(
        blank=True, help_text="Comma-separated addresses; empty: ALERT_EMAIL_RECIPIENTS from the settings."
    )
    description = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["kind", "model__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["model", "kind"], name="alert_rule_one_per_model_kind"),
            models.UniqueConstraint(
                fields=["kind"], condition=models.Q(model__isnull=True), name="alert_rule_one_default_per_kind"
            ),
        ]

    def __str__(self):
        return self.name

    def recipients(self):
        from django.conf import settings

        listed = self.email_to or ",".join(settings.ALERT_EMAIL_RECIPIENTS)
        return [address.strip() for address in listed.split(",") if address.strip()]

    def clean(self):
        from django.core.exceptions import ValidationError

        errors = {}
        if not isinstance(self.features, list) or not all(isinstance(f, str) for f in self.features):
            errors["features"] = 'Give a list of feature names, e.g. ["monthly_charges"].'
        if self.threshold is not None and self.threshold < 0:
            errors["threshold"] = "Give a number ≥ 0."
        if self.for_evaluations < 1:
            errors["for_evaluations"] = "Give 1 or more."
        if self.window_hours < 1:
            errors["window_hours"] = "Give 1 or more hours."
        if self.kind == self.Kind.LATENCY and self.threshold is not None and self.threshold <= 1:
            errors["threshold"] = "Latency: give a ratio above 1 (2 = twice the baseline)."
        if self.kind == self.Kind.ERROR_RATE and self.threshold is not None and self.threshold > 1:
            errors["threshold"] = "Error rate: give a share between 0 and 1 (0.1 = 10 %)."
        if errors:
            raise ValidationError(errors)


class Alert(models.Model):
    """One occurrence of a rule's condition on one model: pending, then firing, then resolved.

    At most one open (pending or firing) alert per rule and model, enforced by the database; the next
    occurrence after it resolves is a new row. Read it through `monitoring.selectors.alerts_firing`.
    """

    class State(models.TextChoices):
        PENDING = "pending", "pending (holding, not yet for long enough)"
        FIRING = "firing"
        RESOLVED = "resolved"

    OPEN_STATES = (State.PENDING, State.FIRING)

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="alerts")
    model = models.ForeignKey("registry.RegisteredModel", on_delete=models.CASCADE, related_name="alerts")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING, db_index=True)
    consecutive = models.PositiveIntegerField(default=1, help_text="Consecutive evaluations it held.")
    value = models.FloatField(null=True, blank=True, help_text="The last measured value (what threshold bounds).")
    threshold = models.FloatField(null=True, blank=True)
    summary = models.CharField(max_length=300)
    evidence = models.JSONField(default=dict, blank=True)
    opened_at = models.DateTimeField()
    fired_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    last_evaluated_at = models.DateTimeField()
    last_notified_at = models.DateTimeField(null=True, blank=True)
    reminders = models.PositiveIntegerField(default=0)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    silenced_until = models.DateTimeField(null=True, blank=True, help_text="No notification before then.")
    silence_reason = models.TextField(blank=True)
    silenced_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-opened_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["rule", "model"],
                condition=models.Q(state__in=["pending", "firing"]),
                name="alert_one_open_per_rule_model",
            )
        ]
        indexes = [models.Index(fields=["state", "model"])]
        permissions = [("acknowledge_alert", "Can acknowledge and silence alerts")]

    def __str__(self):
        return f"#{self.pk} {self.rule.kind} on {self.model.name} ({self.state})"

    def silenced(self, now):
        return self.silenced_until is not None and self.silenced_until > now


class AlertNotification(models.Model):
    """One e-mail about an alert (it fired, a reminder, it resolved), with each attempt's outcome.

    Webhooks about alerts are governance's deliveries (events alert.firing and alert.resolved)."""

    class Event(models.TextChoices):
        FIRING = "firing"
        REMINDER = "reminder"
        RESOLVED = "resolved"

    class Status(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        FAILED = "failed"

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="notifications")
    event = models.CharField(max_length=16, choices=Event.choices)
    recipients = models.JSONField(default=list)
    subject = models.CharField(max_length=300)
    body = models.TextField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    attempt_log = models.JSONField(default=list, blank=True, help_text="[{at, outcome}] per attempt.")
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.event} e-mail about alert #{self.alert_id}"


# --- Retraining -----------------------------------------------------------------------------------------


class RetrainingPolicy(models.Model):
    """When the platform retrains a model by itself (off by default). It never promotes: it opens a request."""

    class Stage(models.TextChoices):
        STAGING = "Staging"
        PRODUCTION = "Production"

    model = models.OneToOneField("registry.RegisteredModel", on_delete=models.CASCADE, related_name="retraining")
    enabled = models.BooleanField(default=False)
    drift_windows = models.PositiveSmallIntegerField(
        default=3, help_text="Retrain when the dataset drifted in this many consecutive drift runs (0: never)."
    )
    accuracy_below = models.FloatField(
        null=True, blank=True, help_text="Retrain when live accuracy stays below this (empty: never)."
    )
    accuracy_windows = models.PositiveSmallIntegerField(
        default=3, help_text="... for this many consecutive hours with at least min_labelled labelled rows each."
    )
    min_labelled = models.PositiveIntegerField(default=30)
    cooldown_hours = models.PositiveIntegerField(default=24, help_text="No new retraining sooner after the last one.")
    request_stage = models.CharField(max_length=16, choices=Stage.choices, default=Stage.PRODUCTION)
    run_as = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Who the runs, registrations and requests are made as (a data scientist); required to enable.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "retraining policies"
        ordering = ["model__name"]

    def __str__(self):
        return f"retraining of {self.model.name}"

    def clean(self):
        from django.core.exceptions import ValidationError

        if self.enabled and self.run_as_id is None:
            raise ValidationError({"run_as": "Say who the retraining acts as (a data scientist) before enabling it."})
        if self.enabled and not self.drift_windows and self.accuracy_below is None:
            raise ValidationError({"drift_windows": "Enable at least one trigger: drift windows or accuracy below."})
        if self.accuracy_below is not None and not 0 < self.accuracy_below <= 1:
            raise ValidationError({"accuracy_below": "Give an accuracy between 0 and 1."})


class Retraining(models.Model):
    """One retraining: why it started, the fresh dataset, the run, the version it gave and the request opened."""

    class Status(models.TextChoices):
        TRAINING = "training"
        REQUESTED = "requested", "requested (a promotion request awaits a decision)"
        GATE_FAILED = "gate_failed", "not registered (missed the gate or the signature)"
        FAILED = "failed"

    OPEN_STATUSES = (Status.TRAINING,)

    class Trigger(models.TextChoices):
        DRIFT = "drift", "dataset drift held"
        ACCURACY = "accuracy", "accuracy stayed below its threshold"

    model = models.ForeignKey("registry.RegisteredModel", on_delete=models.CASCADE, related_name="retrainings")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.TRAINING, db_index=True)
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    base_version = models.ForeignKey("registry.ModelVersion", on_delete=models.PROTECT, related_name="+")
    dataset = models.ForeignKey(
        "experiments.DatasetVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    feedback_rows = models.PositiveIntegerField(default=0)
    run = models.ForeignKey("experiments.Run", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    new_version = models.ForeignKey(
        "registry.ModelVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    promotion_request = models.ForeignKey(
        "registry.PromotionRequest", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    alert = models.ForeignKey(Alert, null=True, blank=True, on_delete=models.SET_NULL, related_name="retrainings")
    evidence = models.JSONField(default=dict, blank=True)
    message = models.TextField(blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["model"], condition=models.Q(status="training"), name="retraining_one_open_per_model"
            )
        ]

    def __str__(self):
        return f"retraining #{self.pk} of {self.model.name} ({self.status})"
