"""What every registry service shares: the events and MLflow sync that follow a change."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.storage import artifact_read_verified
from governance.services import webhook_event_emit
from registry.models import RegisteredModel

if TYPE_CHECKING:
    from governance.models import WebhookSubscription
    from registry.models import ModelVersion


def version_files_verify(version: ModelVersion) -> None:
    """Check every file a version is served from (the model and its ONNX form) against its recorded sha256.

    ArtifactIntegrityError (409) names the file that is missing or changed: what is approved is what serves.
    """
    artifact_read_verified(version.artifact_path, version.artifact_sha256)
    if version.onnx_path:
        artifact_read_verified(version.onnx_path, version.onnx_sha256)


def version_payload(version: ModelVersion) -> dict[str, Any]:
    return {
        "model": version.model.name,
        "version": version.version,
        "stage": version.stage,
        "run_id": version.run_id,
        "artifact_sha256": version.artifact_sha256,
    }


def model_sync_later(model: RegisteredModel) -> None:
    """Mark the model's MLflow copy stale and queue its sync once the change commits."""
    # updated_at moves too: a sync that started before this change must not mark it synced.
    RegisteredModel.objects.filter(pk=model.pk).update(mlflow_synced_at=None, updated_at=timezone.now())
    if settings.MLFLOW_MIRROR_ENABLED:
        model_id = model.pk
        transaction.on_commit(lambda: _queue_sync(model_id))


def _queue_sync(model_id):
    from registry.tasks import sync_model_to_mlflow

    try:
        sync_model_to_mlflow.delay(model_id)
    except Exception as exc:  # broker down: the mirror-pending-models beat task catches up
        logging.getLogger(__name__).warning("could not queue the MLflow sync of model %s: %s", model_id, exc)


def event_emit(event: WebhookSubscription.Event, version: ModelVersion, **extra: Any) -> None:
    webhook_event_emit(event=event, data={**version_payload(version), **extra})
