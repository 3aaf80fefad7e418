"""Checks every registry service shares: who may act, and events that follow a change."""

from django.db import transaction

from governance.services import webhook_event_emit
from mlops_site.errors import NotPermitted


def require_permission(user, *perms, doing):
    """Refuse unless `user` holds one of `perms`; the message says what they tried and what they lack."""
    if user is None or not user.is_authenticated:
        raise NotPermitted(f"{doing} needs a signed-in user")
    if not any(user.has_perm(perm) for perm in perms):
        names = " or ".join(perm.split(".", 1)[1] for perm in perms)
        raise NotPermitted(f"{user.get_username()} may not {doing}: it needs the {names} permission")


def version_payload(version):
    return {
        "model": version.model.name,
        "version": version.version,
        "stage": version.stage,
        "run_id": version.run_id,
        "artifact_sha256": version.artifact_sha256,
    }


def model_sync_later(model):
    """Mark the model's MLflow copy stale and queue its sync once the change commits."""
    from django.utils import timezone

    from registry.models import RegisteredModel

    # updated_at moves too: a sync that started before this change must not mark it synced.
    RegisteredModel.objects.filter(pk=model.pk).update(mlflow_synced_at=None, updated_at=timezone.now())
    model_id = model.pk
    transaction.on_commit(lambda: _queue_sync(model_id))


def _queue_sync(model_id):
    import logging

    from registry.tasks import sync_model_to_mlflow

    try:
        sync_model_to_mlflow.delay(model_id)
    except Exception as exc:  # broker down: the mirror-pending-models beat task catches up
        logging.getLogger(__name__).warning("could not queue the MLflow sync of model %s: %s", model_id, exc)


def event_emit(event, version, **extra):
    webhook_event_emit(event=event, data={**version_payload(version), **extra})
