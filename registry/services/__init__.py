"""Writes of the registry app. Callers import from here, not from the modules."""

from registry.services.common import version_files_verify
from registry.services.mlflow_sync import model_mirror_to_mlflow, models_mirror_pending
from registry.services.promotion import (
    environment_parse,
    production_rollback,
    production_rollback_check,
    promotion_decision_check,
    promotion_request_approve,
    promotion_request_create,
    promotion_request_reject,
    rollback_target,
    stage_parse,
    traffic_request_create,
)
from registry.services.registration import (
    gate_failures,
    model_version_register,
    registered_model_update,
    signature_differences,
    version_fast_form_rebuild,
)

__all__ = [
    "environment_parse",
    "gate_failures",
    "model_mirror_to_mlflow",
    "model_version_register",
    "models_mirror_pending",
    "production_rollback",
    "production_rollback_check",
    "promotion_decision_check",
    "promotion_request_approve",
    "promotion_request_create",
    "promotion_request_reject",
    "registered_model_update",
    "rollback_target",
    "signature_differences",
    "stage_parse",
    "traffic_request_create",
    "version_fast_form_rebuild",
    "version_files_verify",
]
