"""Reads of the serving app."""

from registry.models import ModelVersion
from serving.models import Deployment, LastServed


def active_deployments(*, model_name: str, environment: str) -> list[Deployment]:
    """The active deployments of a model's environment, with their versions and models, in one query."""
    return list(
        Deployment.objects.select_related("version", "version__model")
        .filter(model__name=model_name, environment=environment, status=Deployment.Status.ACTIVE)
        .order_by("mode")
    )


def last_served_version(*, model_name: str, environment: str) -> ModelVersion | None:
    """The version that last answered as the primary of a model's environment (any process), or None."""
    found = (
        LastServed.objects.select_related("version", "version__model")
        .filter(model__name=model_name, environment=environment)
        .first()
    )
    return found.version if found else None
