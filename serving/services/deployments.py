"""Deployments: they follow the registry's stages, and an ML engineer adds a canary or a shadow."""

from django.db import transaction
from django.utils import timezone

from core.errors import Conflict, InvalidInput
from core.permissions import permission_require
from governance.services import audit_record
from registry.models import ModelVersion
from serving.models import Deployment
from serving.signal import signal_bump

_ENVIRONMENT_OF_STAGE = {
    ModelVersion.Stage.PRODUCTION: Deployment.Environment.PRODUCTION,
    ModelVersion.Stage.STAGING: Deployment.Environment.STAGING,
}


def _endpoint(model, environment):
    base = f"/api/v1/models/{model.name}/predict"
    return base if environment == Deployment.Environment.PRODUCTION else f"{base}?environment=staging"


def _retire(deployments, *, by, reason):
    now = timezone.now()
    for deployment in deployments:
        deployment.status = Deployment.Status.RETIRED
        deployment.retired_at = now
        deployment.save(update_fields=["status", "retired_at"])
        audit_record(
            actor=by,
            action="deployment.retired",
            obj=deployment,
            before={"status": Deployment.Status.ACTIVE},
            after={"status": Deployment.Status.RETIRED},
            reason=reason,
        )


def _create(*, version, environment, mode, percent, by, reason):
    deployment = Deployment.objects.create(
        model=version.model,
        version=version,
        environment=environment,
        mode=mode,
        traffic_percent=percent,
        endpoint_url=_endpoint(version.model, environment),
        created_by=by if by is not None and by.is_authenticated else None,
    )
    audit_record(
        actor=by,
        action="deployment.created",
        obj=deployment,
        after={"version": version.version, "environment": environment, "mode": mode, "traffic_percent": percent},
        reason=reason,
    )
    return deployment


def _active(model, environment, mode=None):
    deployments = Deployment.objects.select_for_update().filter(
        model=model, environment=environment, status=Deployment.Status.ACTIVE
    )
    return deployments.filter(mode=mode) if mode else deployments


def deployments_follow_stage(*, version, from_stage, to_stage, by):
    """A version entering Production or Staging becomes that environment's primary; one leaving is retired.

    Runs inside the registry's stage-change transaction; serving processes reload once it commits.
    """
    left = _ENVIRONMENT_OF_STAGE.get(from_stage)
    if left:
        _retire(
            Deployment.objects.select_for_update().filter(
                version=version, environment=left, status=Deployment.Status.ACTIVE
            ),
            by=by,
            reason=f"v{version.version} left {from_stage}",
        )
    entered = _ENVIRONMENT_OF_STAGE.get(to_stage)
    if entered:
        # The new primary replaces the old one; a canary or shadow of this very version is now redundant.
        _retire(
            _active(version.model, entered, Deployment.Mode.PRIMARY), by=by, reason=f"replaced by v{version.version}"
        )
        _retire(
            _active(version.model, entered).filter(version=version).exclude(mode=Deployment.Mode.PRIMARY),
            by=by,
            reason=f"v{version.version} became the primary",
        )
        _create(
            version=version,
            environment=entered,
            mode=Deployment.Mode.PRIMARY,
            percent=100.0,
            by=by,
            reason=f"v{version.version} entered {to_stage}",
        )
    transaction.on_commit(signal_bump)


def _side_deployment(*, version, mode, percent, by, reason, environment):
    permission_require(by, "serving.add_deployment", doing=f"set a {mode} deployment")
    if environment not in Deployment.Environment.values:
        raise InvalidInput(f"must be one of {', '.join(Deployment.Environment.values)}", field="environment")
    with transaction.atomic():
        primary = _active(version.model, environment, Deployment.Mode.PRIMARY).first()
        if primary is None:
            raise Conflict(f"{version.model.name} has nothing deployed in {environment} to put a {mode} beside")
        if primary.version_id == version.pk:
            raise Conflict(f"{version} is already the primary in {environment}", field="version")
        _retire(_active(version.model, environment, mode), by=by, reason=reason or f"{mode} replaced")
        deployment = _create(version=version, environment=environment, mode=mode, percent=percent, by=by, reason=reason)
        transaction.on_commit(signal_bump)
    return deployment


def deployment_set_canary(*, version, percent, by, reason="", environment=Deployment.Environment.PRODUCTION):
    """Send `percent` % of `environment`'s requests to `version` beside the primary (audited)."""
    try:
        percent = float(percent)
    except (TypeError, ValueError):
        raise InvalidInput("must be a number from 0 to 100", field="traffic_percent") from None
    if not 0 < percent <= 100:
        raise InvalidInput("must be more than 0 and at most 100", field="traffic_percent")
    return _side_deployment(
        version=version, mode=Deployment.Mode.CANARY, percent=percent, by=by, reason=reason, environment=environment
    )


def deployment_set_shadow(*, version, by, reason="", environment=Deployment.Environment.PRODUCTION):
    """Have `version` also predict on every request of `environment`, logged but never returned (audited)."""
    return _side_deployment(
        version=version, mode=Deployment.Mode.SHADOW, percent=0.0, by=by, reason=reason, environment=environment
    )


def deployment_retire(*, deployment, by, reason=""):
    """Stop a canary or shadow (a primary leaves only by a stage change)."""
    permission_require(by, "serving.change_deployment", doing="retire deployments")
    if deployment.mode == Deployment.Mode.PRIMARY:
        raise Conflict("a primary deployment follows the registry: change the version's stage instead")
    with transaction.atomic():
        locked = Deployment.objects.select_for_update().get(pk=deployment.pk)
        if locked.status != Deployment.Status.ACTIVE:
            raise Conflict(f"{locked} is already retired")
        _retire([locked], by=by, reason=reason)
        transaction.on_commit(signal_bump)
