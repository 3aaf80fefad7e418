"""Stage changes: requested by one person, checked against the policies, decided by another.

Every function here runs in one transaction that also writes its audit entries and webhook
deliveries; the MLflow aliases follow once it commits. Locks are taken in one order (request,
then model, then versions), so concurrent decisions on one model run one after another.
"""

from django.db import IntegrityError, transaction
from django.utils import timezone

from core.errors import ApplicationError, Conflict, InvalidInput, NotFound, NotPermitted
from core.permissions import permission_require
from core.storage import artifact_read_verified
from experiments.services import dataset_frame_load
from governance.services import ComplianceSubject, audit_record, compliance_evaluate, compliance_failures
from registry.models import ModelVersion, PromotionRequest, RegisteredModel
from registry.services.common import event_emit, model_sync_later
from registry.signals import version_stage_changed

Stage = ModelVersion.Stage

_STAGE_NAMES = {stage.lower(): stage for stage in PromotionRequest.TargetStage.values}


def stage_parse(value):
    """ "production" / "Production" → Stage.PRODUCTION; InvalidInput naming the choices otherwise."""
    stage = _STAGE_NAMES.get(str(value or "").strip().lower())
    if stage is None:
        raise InvalidInput(f"must be one of {', '.join(sorted(_STAGE_NAMES))}", field="to_stage")
    return stage


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
        action="version.stage_changed",
        obj=version,
        before={"stage": before},
        after={"stage": to_stage, "promotion_request": request.pk if request else None},
        reason=reason,
    )
    event_emit("version.stage_changed", version, from_stage=before)
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
        "status": request.status,
        "compliance_score": request.compliance.score if request.compliance else None,
        "compliant": request.compliance.compliant if request.compliance else None,
    }


def _request_open(*, version, to_stage, kind, reason, by):
    evaluation = compliance_evaluate(subject=_compliance_subject(version), by=by)
    try:
        with transaction.atomic():  # a savepoint: a duplicate is refused without undoing the caller's work
            request = PromotionRequest.objects.create(
                version=version,
                kind=kind,
                to_stage=to_stage,
                from_stage=version.stage,
                reason=reason,
                requested_by=by,
                compliance=evaluation,
            )
    except IntegrityError:
        pending = PromotionRequest.objects.filter(version=version, to_stage=to_stage, status="PENDING").first()
        raise Conflict(
            f"request #{pending.pk if pending else '?'} to move {version} to {to_stage} is already pending",
            field="to_stage",
        ) from None
    audit_record(
        actor=by,
        action="rollback.requested" if kind == PromotionRequest.Kind.ROLLBACK else "promotion.requested",
        obj=request,
        after={**_request_snapshot(request), "version": str(version)},
        reason=reason,
    )
    event_emit("promotion.requested", version, request_id=request.pk, to_stage=to_stage, kind=kind)
    return request


def promotion_request_create(*, version, to_stage, reason, by):
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
        artifact_read_verified(version.artifact_path, version.artifact_sha256)
        return _request_open(
            version=version, to_stage=to_stage, kind=PromotionRequest.Kind.PROMOTION, reason=reason, by=by
        )


def _request_locked(request_id):
    try:
        return PromotionRequest.objects.select_for_update().get(pk=int(request_id))
    except (PromotionRequest.DoesNotExist, TypeError, ValueError):
        raise NotFound(f"promotion request {request_id} does not exist") from None


def _decision_checks(request, by, verb):
    if request.status != PromotionRequest.Status.PENDING:
        raise Conflict(f"request #{request.pk} is already {request.status.lower()}; it cannot be {verb} now")
    if request.requested_by_id == by.pk:
        raise NotPermitted(f"{by.get_username()} asked for request #{request.pk}; another approver must decide it")


def promotion_request_approve(*, request_id, by, comment="", override_justification=""):
    """Approve a pending request and move the version; the approver must not be the requester.

    Production needs a compliant version (evaluated again now), or the override permission and
    a written justification, which is audited as an override.
    """
    permission_require(by, "registry.approve_promotion", doing="approve promotions")
    override_justification = (override_justification or "").strip()
    with transaction.atomic():
        request = _request_locked(request_id)
        _decision_checks(request, by, "approved")
        version = _locked_version(request.version_id)
        if version.stage != request.from_stage:
            raise Conflict(
                f"{version} moved from {request.from_stage} to {version.stage} since request #{request.pk}; "
                "reject it and ask again"
            )
        if version.stage == Stage.ARCHIVED and request.kind != PromotionRequest.Kind.ROLLBACK:
            raise Conflict(f"{version} is archived; only a rollback brings it back")
        artifact_read_verified(version.artifact_path, version.artifact_sha256)
        evaluation = compliance_evaluate(subject=_compliance_subject(version), by=by)
        override = request.to_stage == Stage.PRODUCTION and not evaluation.compliant
        if override:
            failures = "; ".join(compliance_failures(evaluation))
            if not by.has_perm("registry.override_compliance"):
                raise NotPermitted(
                    f"{version} is not compliant ({failures}); only a user with the override_compliance "
                    "permission can promote it to Production"
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
            action="promotion.approved",
            obj=request,
            before=before,
            after=_request_snapshot(request),
            reason=request.comment,
        )
        if override:
            audit_record(
                actor=by,
                action="promotion.overridden",
                obj=request,
                after={"failures": compliance_failures(evaluation), "compliance_score": evaluation.score},
                reason=override_justification,
            )
        event_emit("promotion.decided", version, request_id=request.pk, decision="approved", to_stage=request.to_stage)
        previous = version.model.versions.filter(stage=Stage.PRODUCTION).exclude(pk=version.pk).first()
        _stage_set(version, request.to_stage, by=by, reason=request.reason, request=request)
        if request.kind == PromotionRequest.Kind.ROLLBACK:
            _rollback_record(version, previous, by=by, reason=request.reason, emergency=False, request=request)
    return request


def promotion_request_reject(*, request_id, by, comment):
    """Reject a pending request with a comment; the version stays where it is."""
    permission_require(by, "registry.approve_promotion", doing="reject promotions")
    comment = _text_required(comment, "comment")
    with transaction.atomic():
        request = _request_locked(request_id)
        _decision_checks(request, by, "rejected")
        before = _request_snapshot(request)
        request.status = PromotionRequest.Status.REJECTED
        request.decided_by = by
        request.decided_at = timezone.now()
        request.comment = comment
        request.save()
        audit_record(
            actor=by,
            action="promotion.rejected",
            obj=request,
            before=before,
            after=_request_snapshot(request),
            reason=comment,
        )
        event_emit(
            "promotion.decided", request.version, request_id=request.pk, decision="rejected", to_stage=request.to_stage
        )
    return request


def _rollback_record(version, previous, *, by, reason, emergency, request=None):
    audit_record(
        actor=by,
        action="production.rolled_back",
        obj=version.model,
        before={"production_version": previous.version if previous else None},
        after={
            "production_version": version.version,
            "emergency": emergency,
            "promotion_request": request.pk if request else None,
        },
        reason=reason,
    )
    event_emit(
        "production.rolled_back", version, replaced_version=previous.version if previous else None, emergency=emergency
    )


def rollback_target(model):
    """The version that was in Production before the current one, or None."""
    current = model.versions.filter(stage=Stage.PRODUCTION).first()
    earlier = model.versions.filter(production_entered_at__isnull=False).order_by("-production_entered_at")
    if current is not None:
        earlier = earlier.exclude(pk=current.pk).filter(production_entered_at__lt=current.production_entered_at)
    return earlier.first()


def production_rollback(*, model_name, by, reason, emergency=False):
    """Put the previous production version back.

    Normally this opens a rollback request that a second approver decides (returns the request);
    with emergency=True a user holding emergency_rollback does it at once (returns the version).
    """
    if emergency:
        permission_require(by, "registry.emergency_rollback", doing="roll back production without approval")
    else:
        permission_require(by, "registry.request_promotion", "registry.approve_promotion", doing="request a rollback")
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
        artifact_read_verified(target.artifact_path, target.artifact_sha256)
        if not emergency:
            return _request_open(
                version=target, to_stage=Stage.PRODUCTION, kind=PromotionRequest.Kind.ROLLBACK, reason=reason, by=by
            )
        _stage_set(target, Stage.PRODUCTION, by=by, reason=reason)
        _rollback_record(target, current, by=by, reason=reason, emergency=True)
        return target
