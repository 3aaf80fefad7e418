"""Experiments: the named groups runs belong to, created by launching a run or by hand in the admin."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import transaction
from django.forms.models import model_to_dict

from core.permissions import permission_require
from experiments.models import Experiment
from governance.models import AuditAction
from governance.services import audit_record

if TYPE_CHECKING:
    from core.permissions import Actor

_FIELDS = ("name", "description", "tags")


def experiment_save(*, experiment: Experiment, by: Actor) -> Experiment:
    """Create or edit an experiment (name, description, tags), audited with before and after."""
    creating = experiment.pk is None
    if creating:
        permission_require(by, "experiments.add_experiment", doing="create experiments")
    else:
        permission_require(by, "experiments.change_experiment", doing="edit experiments")
    experiment.full_clean()
    with transaction.atomic():
        before = None
        if not creating:
            before = model_to_dict(Experiment.objects.select_for_update().get(pk=experiment.pk), fields=_FIELDS)
        experiment.save()
        after = model_to_dict(experiment, fields=_FIELDS)
        if before != after:
            audit_record(
                actor=by,
                action=AuditAction.EXPERIMENT_CREATED if creating else AuditAction.EXPERIMENT_UPDATED,
                obj=experiment,
                before=before,
                after=after,
            )
    return experiment
