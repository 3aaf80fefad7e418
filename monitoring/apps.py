import logging

from django.apps import AppConfig
from django.db import transaction

logger = logging.getLogger(__name__)


def _queue_reference(version_id):
    from monitoring.tasks import build_reference

    try:
        build_reference.delay(version_id)
    except Exception as exc:  # broker down: the version says it has no reference and how to build it
        logger.warning("could not queue the drift reference of version %s: %s", version_id, exc)


def version_registered(sender, version, **kwargs):
    """A new version: build its drift reference once the registration commits (a task: it reads the data)."""
    version_id = version.pk
    transaction.on_commit(lambda: _queue_reference(version_id))


class MonitoringConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "monitoring"
    verbose_name = "Monitoring"

    def ready(self):
        from registry.signals import version_registered as registered

        registered.connect(version_registered, dispatch_uid="monitoring.drift_reference")
        # The fleet overview, model pages and reports register their admin entries themselves.
        from monitoring import pages  # noqa: F401
