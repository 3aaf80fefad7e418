"""Celery tasks of the serving app (Celery discovers each app's `tasks` module)."""

from serving.crm.tasks import crm_refresh_run, crm_refresh_scheduled

__all__ = ["crm_refresh_run", "crm_refresh_scheduled"]
