"""Writes of the serving app. Callers import from here, not from the modules."""

from serving.services.deployments import (
    deployment_retire,
    deployment_set_canary,
    deployment_set_shadow,
    deployments_follow_stage,
)
from serving.services.feedback import feedback_record

__all__ = [
    "deployment_retire",
    "deployment_set_canary",
    "deployment_set_shadow",
    "deployments_follow_stage",
    "feedback_record",
]
