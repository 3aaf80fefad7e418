"""Monitoring's writes: references, hourly aggregates and sketches, drift runs, the scheduled jobs, alerts and
retraining."""

from monitoring.services.aggregates import HoursResult, error_kind, hours_compute
from monitoring.services.alerts import (
    DEFAULT_RULES,
    EvaluationOutcome,
    Observation,
    alert_acknowledge,
    alert_email_send,
    alert_emails_retry_stalled,
    alert_payload,
    alert_rule_observe,
    alert_rule_save,
    alert_rules_defaults_ensure,
    alert_silence,
    alerts_evaluate,
)
from monitoring.services.drift import DatasetsDrift, datasets_drift, drift_compute, drift_version_default
from monitoring.services.jobs import JobBusy, JobOutcome, job_lock, job_run, models_to_monitor
from monitoring.services.references import drift_reference_build, drift_references_backfill
from monitoring.services.requests import drift_compute_requested, drift_reference_rebuild_queue, monitoring_job_queue
from monitoring.services.retraining import (
    retraining_advance,
    retraining_check,
    retraining_policy_save,
    retraining_start,
    retrainings_advance,
)

__all__ = [
    "DEFAULT_RULES",
    "EvaluationOutcome",
    "Observation",
    "alert_acknowledge",
    "alert_email_send",
    "alert_emails_retry_stalled",
    "alert_payload",
    "alert_rule_observe",
    "alert_rule_save",
    "alert_rules_defaults_ensure",
    "alert_silence",
    "alerts_evaluate",
    "retraining_advance",
    "retraining_check",
    "retraining_policy_save",
    "retraining_start",
    "retrainings_advance",
    "DatasetsDrift",
    "HoursResult",
    "JobBusy",
    "JobOutcome",
    "datasets_drift",
    "drift_compute",
    "drift_compute_requested",
    "drift_reference_rebuild_queue",
    "drift_reference_build",
    "drift_references_backfill",
    "drift_version_default",
    "error_kind",
    "hours_compute",
    "job_lock",
    "job_run",
    "models_to_monitor",
    "monitoring_job_queue",
]
