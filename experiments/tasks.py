"""Celery entry points of the experiments app: each loads by id and calls one service."""

from celery import shared_task
from django.conf import settings

from experiments import services

# A run found RUNNING on redelivery is restarted by the service (bounded by RUN_MAX_ATTEMPTS),
# so the training task is safe to run twice and may be acknowledged late.
_TRAINING = {
    "queue": "training",
    "acks_late": True,
    "reject_on_worker_lost": True,
    "soft_time_limit": settings.TRAINING_TIME_LIMIT,
    "time_limit": settings.TRAINING_TIME_LIMIT + 60,
}


@shared_task(bind=True, name="experiments.train_run", **_TRAINING)
def train_run(self, run_id):
    """Train one run, then mirror it to MLflow (a failed mirror is retried by mirror_pending_runs)."""
    run = services.run_execute(run_id=run_id, task_id=self.request.id or "")
    if run is None:
        return None
    if settings.MLFLOW_MIRROR_ENABLED and run.is_terminal and not run.mlflow_synced:
        services.run_mirror_to_mlflow(run_id=run.pk)
    return run.pk


@shared_task(name="experiments.profile_dataset_upload", queue="default", acks_late=True, time_limit=900)
def profile_dataset_upload(upload_id):
    """Parse, validate and store a large uploaded CSV (safe to run twice: a finished upload is left alone)."""
    upload = services.dataset_upload_profile(upload_id=upload_id)
    return {"upload": upload.pk, "status": upload.status, "version": upload.version_id}


@shared_task(name="experiments.sweep_finalize", queue="training", acks_late=True, time_limit=600)
def sweep_finalize(run_id):
    """Close a sweep once its children ended: pick the best child, then mirror the parent."""
    run = services.sweep_finalize(parent_id=run_id)
    if run is None:
        return None
    if settings.MLFLOW_MIRROR_ENABLED and run.is_terminal and not run.mlflow_synced:
        services.run_mirror_to_mlflow(run_id=run.pk)
    return run.pk


@shared_task(name="experiments.mirror_pending_runs", queue="default", time_limit=1800)
def mirror_pending_runs():
    """Retry the MLflow mirror of ended runs that are not yet there; returns how many made it."""
    return services.runs_mirror_pending()[0] if settings.MLFLOW_MIRROR_ENABLED else 0


@shared_task(name="experiments.reap_lost_runs", queue="default", time_limit=300)
def reap_lost_runs():
    """Fail runs whose worker died, and close sweeps whose children all ended."""
    return services.runs_reap_lost()
