"""Keep the MLflow registry in step with ours: same model name, versions in the same order, and the
stages as the aliases `production` / `staging` plus a `mlops_site.stage` tag on each version.

Our database decides; MLflow gets a copy, so that `models:/NAME@production` in any MLflow client
loads the version our admin shows in Production. A sync that fails is recorded on the model and
retried by the `mirror_pending_models` beat task.
"""

import logging

from django.conf import settings
from django.utils import timezone

from core.mlflow import fluent_lock, mlflow_client
from experiments.services import run_mirror_to_mlflow
from registry.models import ModelVersion, RegisteredModel

logger = logging.getLogger(__name__)

VERSION_ID_TAG = "mlops_site.version_id"
STAGE_TAG = "mlops_site.stage"
ALIASES = {ModelVersion.Stage.PRODUCTION: "production", ModelVersion.Stage.STAGING: "staging"}


def model_mirror_to_mlflow(*, model_id: int) -> bool:
    """Bring the model's MLflow copy up to date; returns True on success, records the error otherwise."""
    model = RegisteredModel.objects.get(pk=model_id)
    started = timezone.now()
    try:
        import mlflow

        # create_model_version resolves a models:/ source through the process-wide tracking URI.
        with fluent_lock:
            mlflow.set_tracking_uri(settings.MLFLOW_TRACKING_URI)
            mlflow.set_registry_uri(settings.MLFLOW_TRACKING_URI)
            _mirror(model, mlflow_client())
    except Exception as exc:  # MLflow down or refusing: recorded, retried by the beat task
        logger.warning("mirroring model %s to MLflow failed: %s", model.name, exc)
        RegisteredModel.objects.filter(pk=model.pk).update(mlflow_sync_error=f"{type(exc).__name__}: {exc}"[:4000])
        return False
    # A stage change that committed while we were syncing cleared the flag after we read; keep it cleared.
    RegisteredModel.objects.filter(pk=model.pk, updated_at__lte=started).update(
        mlflow_synced_at=timezone.now(), mlflow_sync_error=""
    )
    RegisteredModel.objects.filter(pk=model.pk).update(mlflow_sync_error="")
    return True


def _mirror(model, client):
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(model.name)
    except MlflowException:
        client.create_registered_model(
            model.name, tags={key: str(value) for key, value in model.tags.items()}, description=model.description
        )
    remote_by_id = {
        remote.tags.get(VERSION_ID_TAG): remote for remote in client.search_model_versions(f"name='{model.name}'")
    }
    # In version order, so that MLflow numbers them as we do (unless versions were made there by hand).
    for version in model.versions.select_related("run").order_by("version"):
        if not version.mlflow_version:
            remote = remote_by_id.get(str(version.pk)) or _version_create(client, model, version)
            version.mlflow_version = str(remote.version)
            ModelVersion.objects.filter(pk=version.pk).update(mlflow_version=version.mlflow_version)
        client.set_model_version_tag(model.name, version.mlflow_version, STAGE_TAG, version.stage)
    aliases = client.get_registered_model(model.name).aliases  # {alias: version}
    holders = {version.stage: version for version in model.versions.filter(stage__in=list(ALIASES))}
    for stage, alias in ALIASES.items():
        holder = holders.get(stage)
        if holder is not None:
            if str(aliases.get(alias)) != holder.mlflow_version:
                client.set_registered_model_alias(model.name, alias, holder.mlflow_version)
        elif alias in aliases:
            client.delete_registered_model_alias(model.name, alias)


def _version_create(client, model, version):
    run = version.run
    if not run_mirror_to_mlflow(run_id=run.pk):
        run.refresh_from_db(fields=["mlflow_sync_error"])
        raise RuntimeError(f"run {run.pk} is not in MLflow yet: {run.mlflow_sync_error}")
    run.refresh_from_db(fields=["mlflow_run_id"])
    experiment_id = client.get_run(run.mlflow_run_id).info.experiment_id
    logged = client.search_logged_models(
        experiment_ids=[experiment_id], filter_string=f"source_run_id = '{run.mlflow_run_id}' AND name = 'model'"
    )
    if not logged:
        raise RuntimeError(f"MLflow run {run.mlflow_run_id} has no logged model")
    return client.create_model_version(
        model.name,
        source=f"models:/{logged[0].model_id}",
        run_id=run.mlflow_run_id,
        model_id=logged[0].model_id,
        tags={
            VERSION_ID_TAG: str(version.pk),
            "mlops_site.version": str(version.version),
            "mlops_site.artifact_sha256": version.artifact_sha256,
        },
        description=version.description or None,
    )


def models_mirror_pending(*, limit: int = 100) -> tuple[int, int]:
    """Sync every model whose MLflow copy is stale; returns (synced, failed)."""
    results = [
        model_mirror_to_mlflow(model_id=pk)
        for pk in RegisteredModel.objects.filter(mlflow_synced_at__isnull=True).values_list("pk", flat=True)[:limit]
    ]
    return results.count(True), results.count(False)
