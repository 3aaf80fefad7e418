"""Deployments: what answers each environment's traffic.

Nothing here puts a version on traffic by itself. A primary follows the registry's stages (a promotion
or rollback approved by a second person); a canary or shadow follows an approved traffic request
(registry.signals.traffic_approved). Taking traffic away (retiring a canary or shadow) needs only the
ML engineer's permission: it can never put an unapproved version in front of users.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import transaction
from django.utils import timezone

from core.errors import Conflict
from core.permissions import permission_require
from governance.models import AuditAction
from governance.services import audit_record
from registry.models import Environment, ModelVersion, PromotionRequest
from serving.models import Deployment, LastServed
from serving.signal import signal_bump

if TYPE_CHECKING:
    from core.permissions import Actor

_ENVIRONMENT_OF_STAGE = {
    ModelVersion.Stage.PRODUCTION: Environment.PRODUCTION,
    ModelVersion.Stage.STAGING: Environment.STAGING,
}


def _endpoint(model, environment):
    base = f"/api/v1/models/{model.name}/predict"
    return base if environment == Environment.PRODUCTION else f"{base}?environment=staging"


def _retire(deployments, *, by, reason):
    now = timezone.now()
    for deployment in deployments:
        deployment.status = Deployment.Status.RETIRED
        deployment.retired_at = now
        deployment.save(update_fields=["status", "retired_at"])
        audit_record(
            actor=by,
            action=AuditAction.DEPLOYMENT_RETIRED,
            obj=deployment,
            before={"status": Deployment.Status.ACTIVE},
            after={"status": Deployment.Status.RETIRED},
            reason=reason,
        )


def _create(*, version, environment, mode, percent, by, reason, request=None):
    deployment = Deployment.objects.create(
        model=version.model,
        version=version,
        environment=environment,
        mode=mode,
        traffic_percent=percent,
        endpoint_url=_endpoint(version.model, environment),
        created_by=by if by is not None and by.is_authenticated else None,
    )
    after = {"version": version.version, "environment": environment, "mode": mode, "traffic_percent": percent}
    if request is not None:
        after.update(
            promotion_request=request.pk,
            requested_by=request.requested_by.get_username(),
            approved_by=request.decided_by.get_username() if request.decided_by else None,
        )
    audit_record(actor=by, action=AuditAction.DEPLOYMENT_CREATED, obj=deployment, after=after, reason=reason)
    return deployment


def _active(model, environment, mode=None):
    deployments = Deployment.objects.select_for_update().filter(
        model=model, environment=environment, status=Deployment.Status.ACTIVE
    )
    return deployments.filter(mode=mode) if mode else deployments


def deployments_follow_stage(*, version: ModelVersion, from_stage: str, to_stage: str, by: Actor) -> None:
    """A version entering Production or Staging becomes that environment's primary; one leaving is retired,
    and an archived version answers no traffic at all (its canaries and shadows go too).

    Runs inside the registry's stage-change transaction; serving processes reload once it commits.
    """
    if to_stage == ModelVersion.Stage.ARCHIVED:
        _retire(
            Deployment.objects.select_for_update().filter(version=version, status=Deployment.Status.ACTIVE),
            by=by,
            reason=f"v{version.version} was archived",
        )
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


def deployments_follow_traffic_approval(
    *, request: PromotionRequest, version: ModelVersion, by: Actor
) -> Deployment:
    """Put the version of an approved canary or shadow request beside its environment's primary (audited
    with both people), replacing the canary (or shadow) there. Runs in the approval's transaction."""
    mode = Deployment.Mode(request.kind)
    environment = request.environment
    primary = _active(version.model, environment, Deployment.Mode.PRIMARY).first()
    if primary is None:
        raise Conflict(f"{version.model.name} has nothing deployed in {environment} to put a {mode} beside")
    if primary.version_id == version.pk:
        raise Conflict(f"{version} is already the primary in {environment}", field="version")
    reason = f"request #{request.pk}: {request.reason}"
    _retire(_active(version.model, environment, mode), by=by, reason=f"replaced by {version} ({reason})")
    deployment = _create(
        version=version,
        environment=environment,
        mode=mode,
        percent=request.traffic_percent if mode == Deployment.Mode.CANARY else 0.0,
        by=by,
        reason=reason,
        request=request,
    )
    transaction.on_commit(signal_bump)
    return deployment


def deployment_retire(*, deployment: Deployment, by: Actor, reason: str = "") -> Deployment:
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
    return locked


def last_served_record(*, version: ModelVersion, environment: str) -> None:
    """Remember `version` as the one answering for its model's `environment` (the fallback after a restart).

    Not audited: it records what a process loaded, not a decision; the promotion that put it there is."""
    # One upsert statement: it runs on the first request of each process after a deployment change.
    LastServed.objects.bulk_create(
        [LastServed(model_id=version.model_id, environment=environment, version=version)],
        update_conflicts=True,
        unique_fields=["model", "environment"],
        update_fields=["version", "served_at"],
    )
