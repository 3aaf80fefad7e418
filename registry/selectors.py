"""Reads of the registry app."""

from django.db.models import Count, OuterRef, Prefetch, Subquery

from core.errors import NotFound
from registry.models import ModelVersion, PromotionRequest, RegisteredModel


def _stage_version(stage):
    return Subquery(ModelVersion.objects.filter(model=OuterRef("pk"), stage=stage).values("version")[:1])


def model_list():
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


def model_get(*, name):
    model = model_list().filter(name=name).first()
    if model is None:
        raise NotFound(f"model {name!r} does not exist", field="name")
    return model


def version_get(*, model_name, version):
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


def production_version_get(*, model_name):
    """The version of `model_name` now in Production, or None."""
    return (
        ModelVersion.objects.select_related("model")
        .filter(model__name=model_name, stage=ModelVersion.Stage.PRODUCTION)
        .first()
    )


def version_compliance_latest(*, version):
    """The most recent compliance evaluation of a version, or None."""
    return version.compliance_evaluations.order_by("-created_at", "-id").first()


def promotion_request_list(*, status=None, model_name=None):
    requests = PromotionRequest.objects.select_related(
        "version", "version__model", "requested_by", "decided_by", "compliance"
    )
    if status:
        requests = requests.filter(status=status)
    if model_name:
        requests = requests.filter(version__model__name=model_name)
    return requests.order_by("-requested_at", "-id")


def promotion_request_get(*, request_id):
    found = promotion_request_list().filter(pk=request_id).first()
    if found is None:
        raise NotFound(f"promotion request {request_id} does not exist")
    return found


def model_versions(*, model):
    return model.versions.select_related("run", "created_by").prefetch_related(
        Prefetch(
            "promotion_requests",
            queryset=PromotionRequest.objects.filter(status=PromotionRequest.Status.PENDING),
            to_attr="pending",
        )
    )
