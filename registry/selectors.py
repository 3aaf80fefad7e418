"""Reads of the registry app."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db.models import Count, OuterRef, Prefetch, Subquery

from core.errors import NotFound
from registry.models import ModelVersion, PromotionRequest, RegisteredModel

if TYPE_CHECKING:
    from django.db.models import QuerySet

    from governance.models import ComplianceEvaluation


def _stage_version(stage):
    return Subquery(ModelVersion.objects.filter(model=OuterRef("pk"), stage=stage).values("version")[:1])


def model_list() -> QuerySet[RegisteredModel]:
    """Models with their version count and the version numbers in Production and Staging."""
    return (
        RegisteredModel.objects.select_related("owner")
        .annotate(
            version_count=Count("versions"),
            production_version=_stage_version(ModelVersion.Stage.PRODUCTION),
            staging_version=_stage_version(ModelVersion.Stage.STAGING),
        )
        .order_by("name")
    )


def model_get(*, name: str) -> RegisteredModel:
    model = model_list().filter(name=name).first()
    if model is None:
        raise NotFound(f"model {name!r} does not exist", field="name")
    return model


def version_get(*, model_name: str, version: int) -> ModelVersion:
    found = (
        ModelVersion.objects.select_related("model", "model__owner", "run", "dataset", "created_by")
        .filter(model__name=model_name, version=version)
        .first()
    )
    if found is None:
        if not RegisteredModel.objects.filter(name=model_name).exists():
            raise NotFound(f"model {model_name!r} does not exist", field="name")
        raise NotFound(f"{model_name} has no version {version}", field="version")
    return found


def production_version_get(*, model_name: str) -> ModelVersion | None:
    """The version of `model_name` now in Production, or None."""
    return (
        ModelVersion.objects.select_related("model")
        .filter(model__name=model_name, stage=ModelVersion.Stage.PRODUCTION)
        .first()
    )


def version_compliance_latest(*, version: ModelVersion) -> ComplianceEvaluation | None:
    """The most recent compliance evaluation of a version, or None."""
    return version.compliance_evaluations.order_by("-created_at", "-id").first()


def promotion_request_list(
    *, status: str | None = None, model_name: str | None = None
) -> QuerySet[PromotionRequest]:
    requests = PromotionRequest.objects.select_related(
        "version", "version__model", "requested_by", "decided_by", "compliance"
    )
    if status:
        requests = requests.filter(status=status)
    if model_name:
        requests = requests.filter(version__model__name=model_name)
    return requests.order_by("-requested_at", "-id")


def promotion_request_get(*, request_id: int | str) -> PromotionRequest:
    found = promotion_request_list().filter(pk=request_id).first()
    if found is None:
        raise NotFound(f"promotion request {request_id} does not exist")
    return found


def model_versions(*, model: RegisteredModel) -> QuerySet[ModelVersion]:
    return model.versions.select_related("run", "created_by").prefetch_related(
        Prefetch(
            "promotion_requests",
            queryset=PromotionRequest.objects.filter(status=PromotionRequest.Status.PENDING),
            to_attr="pending",
        )
    )
