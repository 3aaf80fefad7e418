"""Stage changes and traffic: requested by one person, checked against the policies, decided by another.

A version reaches an environment's traffic only through here: as its primary by a promotion (or a
rollback) to the environment's stage, or as a canary or shadow beside the primary by a traffic request.
Every request is decided by someone other than its requester, with the compliance evaluated again and
every file of the version checked against its sha256. Every function runs in one transaction that also
writes its audit entries and webhook deliveries; the MLflow aliases and the serving processes follow
once it commits. Locks are taken in one order (request, then model, then versions), so concurrent
decisions on one model run one after another.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import IntegrityError, transaction
from django.utils import timezone

from core.errors import ApplicationError, Conflict, InvalidInput, NotFound, NotPermitted
from core.permissions import permission_require
from experiments.services import dataset_frame_load
from governance.models import AuditAction
from governance.models import WebhookSubscription as _Subscription
from governance.services import ComplianceSubject, audit_record, compliance_evaluate, compliance_failures
from registry.models import Environment, ModelVersion, PromotionRequest, RegisteredModel
from registry.services.common import event_emit, model_sync_later, version_files_verify
from registry.signals import traffic_approved, version_stage_changed

if TYPE_CHECKING:
    from core.permissions import Actor

Stage = ModelVersion.Stage
Kind = PromotionRequest.Kind
Event = _Subscription.Event

_STAGE_NAMES = {stage.lower(): stage for stage in PromotionRequest.TargetStage.values}
# The stage whose version is an environment's primary.
STAGE_OF_ENVIRONMENT = {Environment.PRODUCTION: Stage.PRODUCTION, Environment.STAGING: Stage.STAGING}
# Who may ask for a canary or a shadow: the data scientist who made the version, or an ML engineer.
_TRAFFIC_REQUESTERS = ("registry.request_promotion", "serving.add_deployment")


def stage_parse(value: object) -> str:
    """ "production" / "Production" → Stage.PRODUCTION; InvalidInput naming the choices otherwise."""
    stage = _STAGE_NAMES.get(str(value or "").strip().lower())
    if stage is None:
        raise InvalidInput(f"must be one of {', '.join(sorted(_STAGE_NAMES))}", field="to_stage")
    return stage


def environment_parse(value: object) -> Environment:
    """ "production" / "staging" → Environment; InvalidInput naming the choices otherwise."""
    value = str(value or "").strip().lower()
    if value not in Environment.values:
        raise InvalidInput(f"must be one of {', '.join(Environment.values)}", field="environment")
    return Environment(value)


def _text_required(value, field):
    value = (value or "").strip()
    if not value:
        raise InvalidInput("is required", field=field)
    return value


def _locked_version(version_id):
    """Lock the version's model, then the version, and return the version (fresh)."""
    model_id = ModelVersion.objects.values_list("model_id", flat=True).get(pk=version_id)
    RegisteredModel.objects.select_for_update().get(pk=model_id)
    return ModelVersion.objects.select_for_update().select_related("model", "dataset").get(pk=version_id)


def _stage_set(version, to_stage, *, by, reason, request=None):
    """Move a locked version to `to_stage`, first moving aside the version that holds that slot."""
    now = timezone.now()
    if to_stage in (Stage.PRODUCTION, Stage.STAGING):
        for holder in version.model.versions.select_for_update().filter(stage=to_stage).exclude(pk=version.pk):
            # The old production version is archived (a rollback can bring it back); a staging one steps down.
            _stage_write(
                holder,
                Stage.ARCHIVED if to_stage == Stage.PRODUCTION else Stage.NONE,
                by=by,
                now=now,
                reason=f"replaced by v{version.version}",
                request=request,
            )
    _stage_write(version, to_stage, by=by, now=now, reason=reason, request=request)
    model_sync_later(version.model)


def _stage_write(version, to_stage, *, by, now, reason, request):
    before = version.stage
    version.stage = to_stage
    version.stage_changed_at = now
    fields = ["stage", "stage_changed_at"]
    if to_stage == Stage.PRODUCTION:
        version.production_entered_at = now
        fields.append("production_entered_at")
    version.save(update_fields=fields)
    audit_record(
        actor=by,
        action=AuditAction.VERSION_STAGE_CHANGED,
        obj=version,
        before={"stage": before},
        after={"stage": to_stage, "promotion_request": request.pk if request else None},
        reason=reason,
    )
    event_emit(Event.STAGE_CHANGED, version, from_stage=before)
    version_stage_changed.send(sender=ModelVersion, version=version, from_stage=before, to_stage=to_stage, by=by)


def _compliance_subject(version):
    """The facts the governance policies check about a version, gathered here (governance reads no registry)."""
    dataset = version.dataset
    try:
        dataset_frame_load(version=dataset)
    except ApplicationError as exc:
        valid, problem = False, exc.message
    else:
        valid, problem = True, ""
    model = version.model
    return ComplianceSubject(
        version_id=version.pk,
        model_id=model.pk,
        metrics=version.metrics,
        dataset=str(dataset),
        dataset_rows=dataset.n_rows,
        dataset_valid=valid,
        dataset_problem=problem,
        null_percent={
            column["name"]: 100.0 * column["null_count"] / max(dataset.n_rows, 1)
            for column in dataset.schema["columns"]
        },
        documented={
            "description": bool(model.description.strip() or version.description.strip()),
            "owner": model.owner_id is not None,
            "intended_use": bool(model.intended_use.strip()),
        },
    )


def _request_snapshot(request):
    return {
        "kind": request.kind,
        "to_stage": request.to_stage,
        "from_stage": request.from_stage,
        "environment": request.environment,
        "traffic_percent": request.traffic_percent,
        "status": request.status,
        "requested_by": request.requested_by.get_username(),
        "decided_by": request.decided_by.get_username() if request.decided_by else None,
        "compliance_score": request.compliance.score if request.compliance else None,
        "compliant": request.compliance.compliant if request.compliance else None,
        "breaking_change": request.version.breaking_change,
    }


_REQUESTED_ACTION = {
    Kind.PROMOTION: AuditAction.PROMOTION_REQUESTED,
    Kind.ROLLBACK: AuditAction.ROLLBACK_REQUESTED,
    Kind.CANARY: AuditAction.TRAFFIC_REQUESTED,
    Kind.SHADOW: AuditAction.TRAFFIC_REQUESTED,
}


def _request_open(*, version, kind, reason, by, to_stage="", environment="", traffic_percent=None):
    evaluation = compliance_evaluate(subject=_compliance_subject(version), by=by)
    try:
        with transaction.atomic():  # a savepoint: a duplicate is refused without undoing the caller's work
            request = PromotionRequest.objects.create(
                version=version,
                kind=kind,
                to_stage=to_stage,
                environment=environment,
                traffic_percent=traffic_percent,
                from_stage=version.stage,
                reason=reason,
                requested_by=by,
                compliance=evaluation,
            )
    except IntegrityError:
        pending = PromotionRequest.objects.filter(version=version, status=PromotionRequest.Status.PENDING)
        if kind in PromotionRequest.TRAFFIC_KINDS:
            pending = pending.filter(kind=kind, environment=environment)
        else:
            pending = pending.filter(kind__in=[Kind.PROMOTION, Kind.ROLLBACK], to_stage=to_stage)
        found = pending.first()
        raise Conflict(
            f"request #{found.pk if found else '?'} for {version} ({found.target if found else to_stage}) "
            "is already pending",
            field="environment" if environment else "to_stage",
        ) from None
    audit_record(
        actor=by,
        action=_REQUESTED_ACTION[kind],
        obj=request,
        after={**_request_snapshot(request), "version": str(version)},
        reason=reason,
    )
    event_emit(
        Event.PROMOTION_REQUESTED,
        version,
        request_id=request.pk,
        kind=kind,
        to_stage=to_stage,
        environment=environment,
        traffic_percent=traffic_percent,
    )
    return request


def promotion_request_create(
    *, version: ModelVersion, to_stage: str, reason: str, by: Actor
) -> PromotionRequest:
    """Ask for `version` to move to `to_stage`; runs the compliance evaluation and returns the pending request."""
    permission_require(by, "registry.request_promotion", doing="request promotions")
    to_stage = stage_parse(to_stage)
    reason = _text_required(reason, "reason")
    with transaction.atomic():
        version = _locked_version(version.pk)
        if version.stage == Stage.ARCHIVED:
            raise Conflict(
                f"{version} is archived; use Roll back production to bring back an earlier production version",
                field="version",
            )
        if version.stage == to_stage:
            raise Conflict(f"{version} is already in {to_stage}", field="to_stage")
        version_files_verify(version)
        return _request_open(version=version, kind=Kind.PROMOTION, to_stage=to_stage, reason=reason, by=by)


def traffic_request_create(
    *,
    version: ModelVersion,
    mode: str,
    environment: str,
    reason: str,
    by: Actor,
    traffic_percent: float | str | None = None,
) -> PromotionRequest:
    """Ask for `version` to take a canary share (or a shadow copy) of an environment's traffic.

    Decided like a promotion: compliance evaluated, another person approves; only then does serving
    put it beside the primary. An archived version cannot be put on traffic at all.
    """
    permission_require(by, *_TRAFFIC_REQUESTERS, doing="request canary or shadow deployments")
    if mode not in PromotionRequest.TRAFFIC_KINDS:
        raise InvalidInput("must be canary or shadow", field="mode")
    mode = Kind(mode)
    environment = environment_parse(environment)
    reason = _text_required(reason, "reason")
    if mode == Kind.CANARY:
        try:
            traffic_percent = float(traffic_percent)
        except (TypeError, ValueError):
            raise InvalidInput("must be a number more than 0 and at most 100", field="traffic_percent") from None
        if not 0 < traffic_percent <= 100:
            raise InvalidInput("must be more than 0 and at most 100", field="traffic_percent")
    else:
        traffic_percent = None
    with transaction.atomic():
        version = _locked_version(version.pk)
        _traffic_check(version, mode=mode, environment=environment)
        version_files_verify(version)
        return _request_open(
            version=version,
            kind=mode,
            environment=environment,
            traffic_percent=traffic_percent,
            reason=reason,
            by=by,
        )


def _traffic_check(version, *, mode, environment):
    """Refuse a canary or shadow that cannot be: an archived version, the primary itself, no primary."""
    if version.stage == Stage.ARCHIVED:
        raise Conflict(f"{version} is archived: it cannot be put on traffic", field="version")
    stage = STAGE_OF_ENVIRONMENT[environment]
    if version.stage == stage:
        raise Conflict(f"{version} is already the primary in {environment}", field="version")
    if not version.model.versions.filter(stage=stage).exists():
        raise Conflict(
            f"{version.model.name} has no version in {stage}: nothing answers {environment} to put a {mode} beside",
            field="environment",
        )


def _request_locked(request_id):
    try:
        return PromotionRequest.objects.select_for_update().get(pk=int(request_id))
    except (PromotionRequest.DoesNotExist, TypeError, ValueError):
        raise NotFound(f"promotion request {request_id} does not exist") from None


def promotion_decision_check(*, request: PromotionRequest, by: Actor) -> None:
    """Raise the reason `by` may not decide `request` now (already decided, no approver role, their own).

    The services call it before deciding; the admin calls it to say why it offers no buttons.
    """
    if request.status != PromotionRequest.Status.PENDING:
        raise Conflict(f"request #{request.pk} is already {request.status.lower()}; it cannot be decided now")
    permission_require(by, "registry.approve_promotion", doing="decide promotion requests")
    if request.requested_by_id == by.pk:
        raise NotPermitted(f"{by.get_username()} asked for request #{request.pk}; another approver must decide it")


def promotion_request_approve(
    *, request_id: int | str, by: Actor, comment: str = "", override_justification: str = ""
) -> PromotionRequest:
    """Approve a pending request and carry it out; the approver must not be the requester.

    A promotion or rollback moves the version's stage; a canary or shadow request puts the version on
    its environment's traffic (serving follows the `traffic_approved` signal in this transaction).
    Production, and any traffic in production, needs a compliant version (evaluated again now), or the
    override permission and a written justification, which is audited as an override. Every file of
    the version must still match its sha256.
    """
    permission_require(by, "registry.approve_promotion", doing="approve promotions")
    override_justification = (override_justification or "").strip()
    with transaction.atomic():
        request = _request_locked(request_id)
        promotion_decision_check(request=request, by=by)
        version = _locked_version(request.version_id)
        if version.stage != request.from_stage:
            raise Conflict(
                f"{version} moved from {request.from_stage} to {version.stage} since request #{request.pk}; "
                "reject it and ask again"
            )
        if request.is_traffic:
            _traffic_check(version, mode=request.kind, environment=request.environment)
        elif version.stage == Stage.ARCHIVED and request.kind != Kind.ROLLBACK:
            raise Conflict(f"{version} is archived; only a rollback brings it back")
        version_files_verify(version)
        evaluation = compliance_evaluate(subject=_compliance_subject(version), by=by)
        production = request.to_stage == Stage.PRODUCTION or request.environment == Environment.PRODUCTION
        override = production and not evaluation.compliant
        if override:
            failures = "; ".join(compliance_failures(evaluation))
            if not by.has_perm("registry.override_compliance"):
                raise NotPermitted(
                    f"{version} is not compliant ({failures}); only a user with the override_compliance "
                    "permission can put it on production traffic"
                )
            if not override_justification:
                raise Conflict(
                    f"{version} is not compliant ({failures}); approving it needs a written justification",
                    field="override_justification",
                )
        before = _request_snapshot(request)
        request.status = PromotionRequest.Status.APPROVED
        request.decided_by = by
        request.decided_at = timezone.now()
        request.comment = (comment or "").strip()
        request.compliance = evaluation
        request.override_justification = override_justification if override else ""
        request.save()
        audit_record(
            actor=by,
            action=AuditAction.PROMOTION_APPROVED,
            obj=request,
            before=before,
            after=_request_snapshot(request),
            reason=request.comment,
        )
        if override:
            audit_record(
                actor=by,
                action=AuditAction.PROMOTION_OVERRIDDEN,
                obj=request,
                after={"failures": compliance_failures(evaluation), "compliance_score": evaluation.score},
                reason=override_justification,
            )
        event_emit(
            Event.PROMOTION_DECIDED,
            version,
            request_id=request.pk,
            decision="approved",
            kind=request.kind,
            to_stage=request.to_stage,
            environment=request.environment,
        )
        if request.is_traffic:
            traffic_approved.send(sender=PromotionRequest, request=request, version=version, by=by)
            return request
        previous = version.model.versions.filter(stage=Stage.PRODUCTION).exclude(pk=version.pk).first()
        _stage_set(version, request.to_stage, by=by, reason=request.reason, request=request)
        if request.kind == Kind.ROLLBACK:
            _rollback_record(version, previous, by=by, reason=request.reason, emergency=False, request=request)
    return request


def promotion_request_reject(*, request_id: int | str, by: Actor, comment: str) -> PromotionRequest:
    """Reject a pending request with a comment; the version stays where it is. Not by its requester."""
    permission_require(by, "registry.approve_promotion", doing="reject promotions")
    comment = _text_required(comment, "comment")
    with transaction.atomic():
        request = _request_locked(request_id)
        promotion_decision_check(request=request, by=by)
        before = _request_snapshot(request)
        request.status = PromotionRequest.Status.REJECTED
        request.decided_by = by
        request.decided_at = timezone.now()
        request.comment = comment
        request.save()
        audit_record(
            actor=by,
            action=AuditAction.PROMOTION_REJECTED,
            obj=request,
            before=before,
            after=_request_snapshot(request),
            reason=comment,
        )
        event_emit(
            Event.PROMOTION_DECIDED,
            request.version,
            request_id=request.pk,
            decision="rejected",
            kind=request.kind,
            to_stage=request.to_stage,
            environment=request.environment,
        )
    return request


def _rollback_record(version, previous, *, by, reason, emergency, request=None):
    audit_record(
        actor=by,
        action=AuditAction.PRODUCTION_ROLLED_BACK,
        obj=version.model,
        before={"production_version": previous.version if previous else None},
        after={
            "production_version": version.version,
            "emergency": emergency,
            "promotion_request": request.pk if request else None,
        },
        reason=reason,
    )
    event_emit(Event.ROLLBACK, version, replaced_version=previous.version if previous else None, emergency=emergency)


def rollback_target(model: RegisteredModel) -> ModelVersion | None:
    """The version that was in Production before the current one, or None."""
    current = model.versions.filter(stage=Stage.PRODUCTION).first()
    earlier = model.versions.filter(production_entered_at__isnull=False).order_by("-production_entered_at")
    if current is not None:
        earlier = earlier.exclude(pk=current.pk).filter(production_entered_at__lt=current.production_entered_at)
    return earlier.first()


def production_rollback_check(*, by: Actor, emergency: bool = False) -> None:
    """Raise the reason `by` may not roll production back (at once, with `emergency`); the admin asks too."""
    if emergency:
        permission_require(by, "registry.emergency_rollback", doing="roll back production without approval")
    else:
        permission_require(by, "registry.request_promotion", "registry.approve_promotion", doing="request a rollback")


def production_rollback(
    *, model_name: str, by: Actor, reason: str, emergency: bool = False
) -> PromotionRequest | ModelVersion:
    """Put the previous production version back.

    Normally this opens a rollback request that a second approver decides (returns the request);
    with emergency=True a user holding emergency_rollback does it at once (returns the version).
    """
    production_rollback_check(by=by, emergency=emergency)
    reason = _text_required(reason, "reason")
    model = RegisteredModel.objects.filter(name=model_name).first()
    if model is None:
        raise NotFound(f"model {model_name!r} does not exist", field="model")
    with transaction.atomic():
        RegisteredModel.objects.select_for_update().get(pk=model.pk)
        current = model.versions.filter(stage=Stage.PRODUCTION).first()
        if current is None:
            raise Conflict(f"{model.name} has no version in Production to roll back")
        target = rollback_target(model)
        if target is None:
            raise Conflict(f"{model.name} v{current.version} is the only version that was ever in Production")
        target = _locked_version(target.pk)
        version_files_verify(target)
        if not emergency:
            return _request_open(version=target, kind=Kind.ROLLBACK, to_stage=Stage.PRODUCTION, reason=reason, by=by)
        _stage_set(target, Stage.PRODUCTION, by=by, reason=reason)
        _rollback_record(target, current, by=by, reason=reason, emergency=True)
        return target
