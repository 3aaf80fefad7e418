"""Ground truth sent back for a logged prediction, for live accuracy."""

from django.db import transaction
from django.utils import timezone

from core.errors import Conflict, InvalidInput, NotFound
from serving.models import PredictionLog


def feedback_record(*, request_id, actual, row=0):
    """Store the true label of row `row` of a logged prediction; returns the log row."""
    if actual is None or isinstance(actual, dict | list):
        raise InvalidInput("must be the true label (a string or a number)", field="actual")
    with transaction.atomic():
        entry = (
            PredictionLog.objects.select_for_update()
            .filter(request_id=request_id, row=row)
            .exclude(deployment_mode="shadow")
            .first()
        )
        if entry is None:
            raise NotFound(f"no logged prediction {request_id!r} row {row} (it may still be queued for the log)")
        if entry.actual is not None and str(entry.actual) != str(actual):
            raise Conflict(f"feedback for {request_id} row {row} was already given as {entry.actual!r}", field="actual")
        entry.actual = str(actual)
        entry.feedback_at = timezone.now()
        entry.save(update_fields=["actual", "feedback_at"])
    return entry
