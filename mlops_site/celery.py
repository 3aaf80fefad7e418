"""The Celery application; tasks live in each app's tasks.py."""

import os

from celery import Celery
from celery.signals import worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mlops_site.settings")

app = Celery("mlops_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect
def _serve_worker_metrics(**kwargs):
    """WORKER_METRICS_PORT set: the worker answers Prometheus on that port with what its pool processes
    counted (the CRM refresh's segment updates, batch predictions), added up from PROMETHEUS_MULTIPROC_DIR.
    In a container of its own the web's /metrics cannot see them (pids of different containers collide in
    one shared directory), so compose and Kubernetes scrape each worker here."""
    port = os.environ.get("WORKER_METRICS_PORT")
    if not port:
        return
    from prometheus_client import REGISTRY, CollectorRegistry, multiprocess, start_http_server

    registry = REGISTRY
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    start_http_server(int(port), addr=os.environ.get("WORKER_METRICS_HOST", "0.0.0.0"), registry=registry)  # noqa: S104
