"""Reads of the serving app."""

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Avg, Count, Q

from registry.models import ModelVersion
from serving.models import Deployment, Environment, LastServed, PredictionLog


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


@dataclass(frozen=True)
class DeploymentTraffic:
    """An active deployment and what it answered since a moment: rows predicted, errors, mean latency (ms)."""

    deployment: Deployment
    rows: int = 0
    errors: int = 0
    latency_ms: float | None = None


def production_overview(*, since: datetime) -> list[DeploymentTraffic]:
    """What answers Production traffic now, each deployment with its rows predicted since `since`, in two queries."""
    deployments = list(
        Deployment.objects.select_related("version", "model")
        .filter(environment=Environment.PRODUCTION, status=Deployment.Status.ACTIVE)
        .order_by("model__name", "mode")
    )
    traffic = {
        (row["model_name"], row["version"]): row
        for row in PredictionLog.objects.filter(
            created_at__gte=since, model_name__in={d.model.name for d in deployments}
        )
        .values("model_name", "version")
        .annotate(rows=Count("id"), errors=Count("id", filter=~Q(error="")), latency_ms=Avg("latency_ms"))
    }
    overview = []
    for deployment in deployments:
        row = traffic.get((deployment.model.name, deployment.version.version))
        if row is None:
            overview.append(DeploymentTraffic(deployment=deployment))
        else:
            overview.append(
                DeploymentTraffic(
                    deployment=deployment, rows=row["rows"], errors=row["errors"], latency_ms=row["latency_ms"]
                )
            )
    return overview
