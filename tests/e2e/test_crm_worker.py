"""The CRM's beat task on a real Celery worker: it starts a refresh of the changed customers as the
system, the worker runs it to the end, and the worker's counters reach /metrics through the
multiprocess directory it shares with the web processes."""

import contextlib
import uuid

import pytest
from django.conf import settings
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from governance.models import AuditEntry
from mlops_site.celery import app as celery_app
from serving.crm.models import CrmRefresh, Customer, SegmentChange
from serving.crm.tasks import crm_refresh_scheduled
from tests.e2e import processes
from tests.serving.crm.helpers import churn_promote, churn_version_register, customers_make

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def worker(tmp_path):
    with celery_app.connection_for_write() as connection, contextlib.suppress(Exception):
        connection.default_channel.queue_purge("default")
    metrics = tmp_path / "prometheus"
    metrics.mkdir()
    process = processes.start(
        "celery", "-A", "mlops_site", "worker", "--queues", "default", "--concurrency", "1", "--pool", "prefork",
        "--loglevel", "INFO", "--hostname", f"crm-{uuid.uuid4().hex[:8]}@%h", "--without-gossip", "--without-mingle",
        log=tmp_path / "worker.log",
        PROMETHEUS_MULTIPROC_DIR=str(metrics),
        SERVING_SIGNAL_FILE=str(tmp_path / "signal"),
        CRM_BATCH_SIZE="16",
    )  # fmt: skip
    process.metrics = metrics
    yield process
    processes.stop(process)


def _counted(directory, status):
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return sum(
        sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == "crm_segment_updates_total" and sample.labels["status"] == status
    )


def test_the_beat_task_refreshes_every_customer_on_a_real_worker(worker, scientist, approver):
    churn_promote(churn_version_register(by=scientist), scientist=scientist, approver=approver)
    customers_make(40)
    assert "crm-refresh-segments" in settings.CELERY_BEAT_SCHEDULE

    crm_refresh_scheduled.delay()  # what beat sends at 02:30

    refresh = processes.wait_for(
        lambda: CrmRefresh.objects.filter(status__in=["finished", "failed"]).first(),
        timeout=120,
        process=worker,
        what="the refresh to end",
    )
    assert refresh.status == "finished", refresh.error
    assert (refresh.actor_name, refresh.processed, refresh.updated) == ("crm-refresh", 40, 40)
    assert refresh.celery_task_id
    assert not Customer.objects.filter(segment="").exists()
    assert SegmentChange.objects.filter(refresh=refresh, actor_name="crm-refresh").count() == 40
    assert list(
        AuditEntry.objects.filter(object_type="serving.crmrefresh").order_by("id").values_list("action", "actor_name")
    ) == [("crm.refresh_started", "crm-refresh"), ("crm.refresh_ended", "crm-refresh")]
    assert _counted(worker.metrics, "updated") == 40
