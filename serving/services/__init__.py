"""Writes of the serving app. Callers import from here, not from the modules."""

from serving.services.deployments import (
    deployment_retire,
    deployments_follow_stage,
    deployments_follow_traffic_approval,
    last_served_record,
)
from serving.services.feedback import feedback_record

__all__ = [
    "deployment_retire",
    "deployments_follow_stage",
    "deployments_follow_traffic_approval",
    "feedback_record",
    "last_served_record",
]
