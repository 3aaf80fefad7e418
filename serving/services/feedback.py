"""Ground truth sent back for a logged prediction, for live accuracy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import transaction
from django.utils import timezone

from core.errors import Conflict, InvalidInput, NotFound, Unprocessable
from core.permissions import permission_require
from governance.models import AuditAction
from governance.services import audit_record
from registry.models import ModelVersion
from serving.models import Deployment, PredictionLog

if TYPE_CHECKING:
    from core.permissions import Actor


def _classes(entry):
    signature = (
        ModelVersion.objects.filter(model__name=entry.model_name, version=entry.version)
        .values_list("signature", flat=True)
        .first()
    )
    return list(signature["classes"]) if signature else None


def feedback_record(
    *, request_id: str, actual: str | int | float, by: Actor, row: int = 0, correction: bool = False
) -> PredictionLog:
    """Store the true label of row `row` of a logged prediction (the answer's row, never a shadow's).

    The label must be one of the answering version's classes. The same label again changes nothing; a
    different one is refused unless sent as a correction, which replaces it and is audited.
    """
    permission_require(by, "serving.give_feedback", doing="send feedback")
    if actual is None or isinstance(actual, dict | list | bool):
        raise InvalidInput("must be the true label (a string or a number)", field="actual")
    actual = str(actual)
    with transaction.atomic():
        entry = (
            PredictionLog.objects.select_for_update()
            .filter(request_id=request_id, row=row)
            .exclude(deployment_mode=Deployment.Mode.SHADOW)
            .first()
        )
        if entry is None:
            raise NotFound(f"no logged prediction {request_id!r} row {row} (it may still be queued for the log)")
        if entry.error:
            raise Conflict(f"{request_id} row {row} was refused ({entry.error[:100]}): it has no prediction to judge")
        classes = _classes(entry)
        if classes is not None and actual not in classes:
            raise Unprocessable(
                f"{actual!r} is not a class of {entry.model_name} v{entry.version}; give one of: {', '.join(classes)}",
                field="actual",
                extra={"classes": classes},
            )
        previous = entry.actual
        if previous is not None and str(previous) == actual:
            return entry  # sent twice: counted once
        if previous is not None and not correction:
            raise Conflict(
                f"feedback for {request_id} row {row} was already given as {previous!r}; "
                'send it again with "correction": true to replace it',
                field="actual",
            )
        entry.actual = actual
        entry.feedback_at = timezone.now()
        entry.save(update_fields=["actual", "feedback_at"])
        if previous is not None:
            audit_record(
                actor=by,
                action=AuditAction.FEEDBACK_CORRECTED,
                obj=entry,
                before={"actual": previous},
                after={"actual": actual, "prediction": entry.prediction},
            )
    return entry
