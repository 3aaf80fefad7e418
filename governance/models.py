from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models


class AuditAction(models.TextChoices):
    """Every action the audit log records, once, with what it means. Services write these names; the
    admin's filter and the API documentation read this list."""

    DATASET_CREATED = "dataset.created", "A dataset version was stored (built-in or uploaded CSV)"
    EXPERIMENT_CREATED = "experiment.created", "An experiment was created by hand"
    EXPERIMENT_UPDATED = "experiment.updated", "An experiment's name, description or tags were edited"
    RUN_LAUNCHED = "run.launched", "A training run or sweep was launched"
    RUN_STARTED = "run.started", "A worker started (or restarted) a run"
    RUN_FINISHED = "run.finished", "A run finished and recorded its metrics and model"
    RUN_FAILED = "run.failed", "A run failed, with the reason"
    RUN_KILLED = "run.killed", "A run was stopped by a user"
    RUN_IMPORTED = "run.imported", "A run was imported from an MLflow store"
    MODEL_CREATED = "model.created", "A registered model was created by its first registration"
    MODEL_UPDATED = "model.updated", "A model's documentation, tags or registration gate were edited"
    VERSION_REGISTERED = "version.registered", "A finished run was registered as a model version"
    VERSION_FAST_FORM_BUILT = "version.fast_form_built", "A version's fast inference (ONNX) form was rebuilt"
    VERSION_STAGE_CHANGED = "version.stage_changed", "A version moved to another stage"
    PROMOTION_REQUESTED = "promotion.requested", "A stage change was requested"
    ROLLBACK_REQUESTED = "rollback.requested", "A rollback of production was requested"
    TRAFFIC_REQUESTED = "traffic.requested", "A canary or shadow deployment was requested"
    PROMOTION_APPROVED = "promotion.approved", "A second person approved a request"
    PROMOTION_REJECTED = "promotion.rejected", "A second person rejected a request"
    PROMOTION_OVERRIDDEN = "promotion.overridden", "A non-compliant version was approved with a justification"
    PRODUCTION_ROLLED_BACK = "production.rolled_back", "Production went back to an earlier version"
    DEPLOYMENT_CREATED = "deployment.created", "A version started answering an environment's traffic"
    DEPLOYMENT_RETIRED = "deployment.retired", "A deployment stopped answering traffic"
    FEEDBACK_CORRECTED = "feedback.corrected", "The true label of a logged prediction was corrected"
    CRM_SEGMENT_UPDATED = "crm.segment_updated", "A customer's segment was predicted and written on request"
    CRM_SETTINGS_UPDATED = "crm.settings_updated", "The model or the mapping that decides CRM segments changed"
    CRM_REFRESH_STARTED = "crm.refresh_started", "A refresh of many customers' segments was started"
    CRM_REFRESH_STOP_REQUESTED = "crm.refresh_stop_requested", "Someone asked a refresh to stop after its current chunk"
    CRM_REFRESH_RESUMED = "crm.refresh_resumed", "A stopped or failed refresh was queued again from where it stopped"
    CRM_REFRESH_ENDED = "crm.refresh_ended", "A refresh finished, stopped or failed (with its counts)"
    CRM_CUSTOMERS_SEEDED = "crm.customers_seeded", "The embedded CRM was filled with synthetic customers"
    POLICY_CREATED = "policy.created", "A governance policy was created"
    POLICY_UPDATED = "policy.updated", "A governance policy was edited"
    WEBHOOK_CREATED = "webhook.created", "A webhook subscription was created"
    WEBHOOK_UPDATED = "webhook.updated", "A webhook subscription was edited"
    WEBHOOK_REDELIVERED = "webhook.redelivered", "Webhook deliveries were sent again by hand"
    ROLE_GRANTED = "role.granted", "A user was given a role"
    ROLE_REVOKED = "role.revoked", "A user lost a role"
    AUDIT_RESEALED = "audit.resealed", "Entries written before the audit key existed were sealed with it"
    ALERT_RULE_CREATED = "alert_rule.created", "An alert rule was created"
    ALERT_RULE_UPDATED = "alert_rule.updated", "An alert rule was edited (threshold, sample, for, recipients...)"
    ALERT_FIRED = "alert.fired", "An alert's condition held long enough and it fired"
    ALERT_RESOLVED = "alert.resolved", "A firing alert's condition cleared"
    ALERT_ACKNOWLEDGED = "alert.acknowledged", "Someone acknowledged a firing alert"
    ALERT_SILENCED = "alert.silenced", "Someone silenced an alert's notifications until a time, with a reason"
    RETRAINING_POLICY_UPDATED = "retraining_policy.updated", "A model's retraining policy was created or edited"
    RETRAINING_STARTED = "retraining.started", "Drift or low accuracy started a retraining (fresh data, a run)"
    RETRAINING_REGISTERED = "retraining.registered", "A retraining's run passed the gate and was registered"
    RETRAINING_ENDED = "retraining.ended", "A retraining ended: request opened, gate missed, or run failed"


class AuditEntryQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise PermissionError("Audit entries are append-only.")

    def delete(self):
        raise PermissionError("Audit entries are append-only.")


class AuditEntry(models.Model):
    """One state change: who did what to which object, and why.

    Entries are append-only and hash-chained: each stores the hash of the entry
    before it and of its own content, so an edited or removed entry breaks the chain.
    """

    created_at = models.DateTimeField(db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    actor_name = models.CharField(max_length=150, help_text="Username, or the system component.")
    action = models.CharField(max_length=64, choices=AuditAction.choices, db_index=True)
    object_type = models.CharField(max_length=100, db_index=True)
    object_id = models.CharField(max_length=64, db_index=True)
    object_repr = models.CharField(max_length=200)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    prev_hash = models.CharField(max_length=64)
    entry_hash = models.CharField(max_length=64, unique=True)

    objects = AuditEntryQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "audit entries"

    def __str__(self):
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_name} {self.action} {self.object_repr}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise PermissionError("Audit entries are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("Audit entries are append-only.")


class Policy(models.Model):
    """A rule a model version must meet before it goes to Production, edited by the team in the admin."""

    class Kind(models.TextChoices):
        PERFORMANCE = "performance", "Performance threshold"
        DATA_QUALITY = "data_quality", "Data quality"
        DOCUMENTATION = "documentation", "Documentation"

    DOCUMENTATION_FIELDS = ("description", "owner", "intended_use")

    name = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    enabled = models.BooleanField(default=True)
    model = models.ForeignKey(
        "registry.RegisteredModel",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="policies",
        help_text="Leave empty to apply it to every model.",
    )
    # Performance: minimum metric values ({"accuracy": 0.9}) and a maximum single-row latency.
    min_metrics = models.JSONField(default=dict, blank=True, help_text='Performance: e.g. {"accuracy": 0.9}.')
    max_latency_ms = models.FloatField(
        null=True, blank=True, help_text="Performance: maximum single-row inference time, in ms."
    )
    # Data quality.
    require_validated_dataset = models.BooleanField(
        default=True, help_text="Data quality: the training data still matches its checksum and schema."
    )
    min_rows = models.PositiveIntegerField(null=True, blank=True, help_text="Data quality: minimum training rows.")
    max_null_percent = models.FloatField(
        null=True, blank=True, help_text="Data quality: no column may have more than this % of nulls."
    )
    # Documentation: which of description, owner and intended use must be filled in.
    required_fields = models.JSONField(
        default=list, blank=True, help_text='Documentation: any of ["description", "owner", "intended_use"].'
    )
    description = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["kind", "name"]
        verbose_name_plural = "policies"

    def __str__(self):
        return self.name

    def clean(self):
        errors = {}
        if not isinstance(self.min_metrics, dict) or not all(
            isinstance(value, int | float) and not isinstance(value, bool) for value in self.min_metrics.values()
        ):
            errors["min_metrics"] = 'Give metric names and numbers, e.g. {"accuracy": 0.9}.'
        if not isinstance(self.required_fields, list) or not set(self.required_fields) <= set(
            self.DOCUMENTATION_FIELDS
        ):
            errors["required_fields"] = f"Give a list of any of: {', '.join(self.DOCUMENTATION_FIELDS)}."
        if self.max_null_percent is not None and not 0 <= self.max_null_percent <= 100:
            errors["max_null_percent"] = "Give a percentage between 0 and 100."
        if self.max_latency_ms is not None and self.max_latency_ms <= 0:
            errors["max_latency_ms"] = "Give a positive number of milliseconds."
        if not errors:
            rules = {
                self.Kind.PERFORMANCE: bool(self.min_metrics) or self.max_latency_ms is not None,
                self.Kind.DATA_QUALITY: self.require_validated_dataset
                or self.min_rows is not None
                or self.max_null_percent is not None,
                self.Kind.DOCUMENTATION: bool(self.required_fields),
            }
            if not rules.get(self.kind, True):
                errors["kind"] = f"A {self.get_kind_display().lower()} policy needs at least one of its rules set."
        if errors:
            raise ValidationError(errors)


class ComplianceEvaluation(models.Model):
    """The result of checking one model version against every policy that applies to it."""

    version = models.ForeignKey(
        "registry.ModelVersion", on_delete=models.PROTECT, related_name="compliance_evaluations"
    )
    # [{"policy": name, "kind": kind, "passed": bool, "checks": [{"check", "passed", "detail"}]}]
    results = models.JSONField()
    score = models.FloatField(help_text="Share of policies passed, 0 to 100.")
    compliant = models.BooleanField()
    evaluated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        get_latest_by = ["created_at", "id"]

    def __str__(self):
        return f"{self.version}: {'compliant' if self.compliant else 'not compliant'} ({self.score:.0f}%)"


class WebhookSubscription(models.Model):
    """A URL that receives registry events as signed JSON POSTs (for GitOps pipelines, chat, CI)."""

    class Event(models.TextChoices):
        VERSION_REGISTERED = "version.registered"
        STAGE_CHANGED = "version.stage_changed"
        PROMOTION_REQUESTED = "promotion.requested"
        PROMOTION_DECIDED = "promotion.decided"
        ROLLBACK = "production.rolled_back"
        AUDIT_ANCHORED = "audit.anchored"
        ALERT_FIRING = "alert.firing"
        ALERT_RESOLVED = "alert.resolved"

    name = models.CharField(max_length=200, unique=True)
    url = models.URLField(max_length=500)
    secret = models.CharField(max_length=200, help_text="Key of the HMAC-SHA256 X-Signature header over the body.")
    events = models.JSONField(default=list, blank=True, help_text="Event names; empty means every event.")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def clean(self):
        if not isinstance(self.events, list) or not set(self.events) <= set(self.Event.values):
            raise ValidationError({"events": f"Give a list of any of: {', '.join(self.Event.values)}."})

    def wants(self, event):
        return not self.events or event in self.events


class WebhookDelivery(models.Model):
    """One event sent to one subscription: its payload, each attempt's outcome, and where it ended."""

    class Status(models.TextChoices):
        PENDING = "PENDING"
        DELIVERED = "DELIVERED"
        FAILED = "FAILED"

    subscription = models.ForeignKey(WebhookSubscription, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=64, db_index=True)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.TextField(blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "webhook deliveries"

    def __str__(self):
        return f"{self.event} → {self.subscription}"
