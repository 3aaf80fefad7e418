"""The CRM's tables: the embedded CRM (customers), the segment history, refresh jobs and the settings.

Imported by serving/models.py, so they belong to the serving app (app label "serving").
"""

from django.conf import settings
from django.db import models
from django.utils import timezone

# The demo model (customer_churn): probability bands of churning, highest risk first.
CHURN_MAPPING = {
    "rules": [
        {"segment": "at_risk", "class": "yes", "min_probability": 0.6},
        {"segment": "watch", "class": "yes", "min_probability": 0.3},
        {"segment": "loyal"},
    ]
}


def _churn_mapping():
    return {"rules": [dict(rule) for rule in CHURN_MAPPING["rules"]]}


class Customer(models.Model):
    """A customer of the embedded CRM: the features a model takes, and the segment last written."""

    customer_id = models.CharField(max_length=64)
    features = models.JSONField(help_text="Feature name → value, as the model's signature names them.")
    # Not indexed: every refresh rewrites segments, and each index is one more write per customer.
    segment = models.CharField(max_length=64, blank=True)
    segment_model = models.CharField(max_length=100, blank=True)
    segment_version = models.PositiveIntegerField(null=True, blank=True)
    segment_set_at = models.DateTimeField(null=True, blank=True)
    segment_request_id = models.CharField(max_length=64, blank=True)
    segment_set_by = models.CharField(max_length=150, blank=True, help_text="A user, or the refresh job.")
    features_updated_at = models.DateTimeField(
        default=timezone.now,
        db_index=True,
        help_text="When the features last changed (a refresh of changed customers reads this).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["customer_id"]
        permissions = [("update_segment", "Can update a customer's segment from a prediction")]
        # A constraint rather than unique=True: on PostgreSQL that would add a second (LIKE) index,
        # one more write per customer whose segment a refresh changes.
        constraints = [models.UniqueConstraint(fields=["customer_id"], name="one_customer_per_id")]

    def __str__(self):
        return self.customer_id


class CrmRefresh(models.Model):
    """One refresh of many customers' segments: its scope, where it got to, and what it changed."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        STOPPING = "stopping"
        STOPPED = "stopped"
        FINISHED = "finished"
        FAILED = "failed"

    class Scope(models.TextChoices):
        ALL = "all", "every customer"
        CHANGED = "changed", "customers changed since the last refresh"

    ACTIVE = (Status.QUEUED, Status.RUNNING, Status.STOPPING)
    RESUMABLE = (Status.STOPPED, Status.FAILED)

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    scope = models.CharField(max_length=16, choices=Scope.choices, default=Scope.ALL)
    since = models.DateTimeField(null=True, blank=True, help_text="Changed scope: features changed at or after this.")
    scope_note = models.CharField(max_length=200, blank=True, help_text="Why the scope is what it is.")
    model_name = models.CharField(max_length=100)
    model_version = models.PositiveIntegerField(null=True, blank=True, help_text="The primary version at the start.")
    mapping = models.JSONField(default=dict, help_text="The mapping in force when the refresh started.")
    cursor = models.CharField(
        max_length=64, blank=True, help_text="The last customer id done (ids are walked in order)."
    )
    total = models.PositiveIntegerField(null=True, blank=True)
    processed = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    failures = models.JSONField(default=list, blank=True, help_text="The first failures: customer id and reason.")
    runner = models.CharField(max_length=32, blank=True, help_text="The attempt now running it; a new one takes over.")
    attempts = models.PositiveIntegerField(default=0)
    celery_task_id = models.CharField(max_length=64, blank=True)
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_name = models.CharField(max_length=150)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "segment refresh"
        verbose_name_plural = "segment refreshes"
        permissions = [("refresh_segments", "Can start, stop and resume a refresh of every customer's segment")]

    def __str__(self):
        return f"refresh #{self.pk} ({self.get_scope_display()})"

    @property
    def progress(self):
        if not self.total:
            return 1.0 if self.status == self.Status.FINISHED else 0.0
        return min(self.processed / self.total, 1.0)


class SegmentChange(models.Model):
    """One segment written (or being written) to the CRM: old → new, which prediction, who or which job."""

    class Status(models.TextChoices):
        APPLIED = "applied"
        PENDING = "pending", "pending (sent again on resume)"
        FAILED = "failed"

    customer_id = models.CharField(max_length=64)
    segment_before = models.CharField(max_length=64, blank=True)
    segment_after = models.CharField(max_length=64)
    model_name = models.CharField(max_length=100)
    model_version = models.PositiveIntegerField()
    deployment_mode = models.CharField(max_length=16, help_text="primary or canary: which deployment predicted.")
    prediction = models.CharField(max_length=100)
    confidence = models.FloatField()
    request_id = models.CharField(max_length=64, help_text="The prediction log's request id.")
    row = models.PositiveIntegerField(default=0, help_text="The row of that request.")
    idempotency_key = models.CharField(max_length=120)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.APPLIED)
    error = models.TextField(blank=True)
    refresh = models.ForeignKey(
        CrmRefresh, null=True, blank=True, on_delete=models.SET_NULL, related_name="changes", db_index=False
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    actor_name = models.CharField(max_length=150)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        # Few indexes: a refresh inserts a row per changed customer, and each index is one more write.
        # A customer's history; a prediction's row; a refresh's pending writes (and its changes).
        indexes = [
            models.Index(fields=["customer_id", "-created_at"]),
            models.Index(fields=["request_id"]),
            models.Index(fields=["refresh", "status"]),
        ]

    def __str__(self):
        return f"{self.customer_id}: {self.segment_before or '–'} → {self.segment_after}"


class CrmSettings(models.Model):
    """Which registered model drives segments and how its predictions become segments (one row)."""

    model_name = models.CharField(max_length=100, default="churn")
    mapping = models.JSONField(default=_churn_mapping)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        verbose_name = "CRM settings"
        verbose_name_plural = "CRM settings"

    def __str__(self):
        return f"CRM segments from {self.model_name}"
