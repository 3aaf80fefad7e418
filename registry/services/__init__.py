"""Writes of the registry app. Callers import from here, not from the modules."""

from registry.services.mlflow_sync import model_mirror_to_mlflow, models_mirror_pending
from registry.services.promotion import (
    production_rollback,
    promotion_request_approve,
    promotion_request_create,
    promotion_request_reject,
    rollback_target,
    stage_parse,
)
from registry.services.registration import gate_failures, model_version_register, registered_model_update

__all__ = [
    "gate_failures",
    "model_mirror_to_mlflow",
    "model_version_register",
    "models_mirror_pending",
    "production_rollback",
    "promotion_request_approve",
    "promotion_request_create",
    "promotion_request_reject",
    "registered_model_update",
    "rollback_target",
    "stage_parse",
]
