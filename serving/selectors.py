"""Reads of the serving app."""

from serving.models import Deployment


def active_deployments(*, model_name: str, environment: str) -> list[Deployment]:
    """The active deployments of a model's environment, with their versions and models, in one query."""
    return list(
        Deployment.objects.select_related("version", "version__model")
        .filter(model__name=model_name, environment=environment, status=Deployment.Status.ACTIVE)
        .order_by("mode")
    )
