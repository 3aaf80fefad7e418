"""Reads of the registry app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db.models import Count, OuterRef, Prefetch, Subquery

from core.errors import NotFound
from core.metrics import lower_is_better
from registry.models import Environment, ModelVersion, PromotionRequest, RegisteredModel

if TYPE_CHECKING:
    from django.db.models import QuerySet

    from core.permissions import Actor
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


def promotion_requests_awaiting(*, user: Actor, limit: int = 10) -> list[PromotionRequest]:
    """Pending requests `user` may decide: they hold approve_promotion and did not ask themselves."""
    if not user.has_perm("registry.approve_promotion"):
        return []
    pending = promotion_request_list(status=PromotionRequest.Status.PENDING).exclude(requested_by=user)
    return list(pending.order_by("requested_at", "id")[:limit])


@dataclass(frozen=True)
class MetricComparison:
    key: str
    candidate: float | None
    current: float | None
    better: bool | None  # None: not comparable (missing on one side, or equal)


@dataclass(frozen=True)
class PromotionComparison:
    """A request's version against the one it would replace (None when the stage is empty)."""

    candidate: ModelVersion
    current: ModelVersion | None
    stage: str
    metrics: list[MetricComparison]


def promotion_comparison(*, request: PromotionRequest) -> PromotionComparison:
    """The candidate's metrics side by side with the version now in the stage the request aims at."""
    if request.kind in (PromotionRequest.Kind.PROMOTION, PromotionRequest.Kind.ROLLBACK):
        stage = request.to_stage
    else:  # a traffic request sits beside the primary of its environment
        stage = (
            ModelVersion.Stage.STAGING if request.environment == Environment.STAGING else ModelVersion.Stage.PRODUCTION
        )
    candidate = request.version
    current = (
        ModelVersion.objects.filter(model_id=candidate.model_id, stage=stage).exclude(pk=candidate.pk).first()
        if stage in (ModelVersion.Stage.STAGING, ModelVersion.Stage.PRODUCTION)
        else None
    )
    theirs = current.metrics if current else {}
    rows = []
    for key in sorted(set(candidate.metrics) | set(theirs)):
        mine, other = candidate.metrics.get(key), theirs.get(key)
        better = None
        if isinstance(mine, int | float) and isinstance(other, int | float) and mine != other:
            better = (mine < other) if lower_is_better(key) else (mine > other)
        rows.append(MetricComparison(key=key, candidate=mine, current=other, better=better))
    return PromotionComparison(candidate=candidate, current=current, stage=stage, metrics=rows)
