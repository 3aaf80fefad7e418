"""Celery entry points of the registry app: each loads by id and calls one service."""

from celery import shared_task
from django.conf import settings

from registry import services


@shared_task(name="registry.sync_model_to_mlflow", queue="default", acks_late=True, time_limit=600)
def sync_model_to_mlflow(model_id):
    """Mirror a model's versions and aliases to MLflow (safe to run twice: it converges)."""
    return services.model_mirror_to_mlflow(model_id=model_id)


@shared_task(name="registry.mirror_pending_models", queue="default", time_limit=1800)
def mirror_pending_models():
    """Retry the MLflow sync of models changed while MLflow was unreachable; returns how many made it."""
    return services.models_mirror_pending()[0] if settings.MLFLOW_MIRROR_ENABLED else 0
