"""The CRM on the real processes: the beat task on a Celery worker starts a refresh of the changed
customers as the system and the worker runs it to the end, its counters written to the multiprocess
directory /metrics reads; and updates answered by two gunicorn workers add up on /metrics."""

import contextlib
import json
import urllib.request
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
    from tests.e2e.test_processes import _free_port

    metrics_port = _free_port()
    process = processes.start(
        "celery", "-A", "mlops_site", "worker", "--queues", "default", "--concurrency", "1", "--pool", "prefork",
        "--loglevel", "INFO", "--hostname", f"crm-{uuid.uuid4().hex[:8]}@%h", "--without-gossip", "--without-mingle",
        log=tmp_path / "worker.log",
        PROMETHEUS_MULTIPROC_DIR=str(metrics),
        SERVING_SIGNAL_FILE=str(tmp_path / "signal"),
        CRM_BATCH_SIZE="16",
        WORKER_METRICS_PORT=str(metrics_port),  # as compose and Kubernetes run it
        WORKER_METRICS_HOST="127.0.0.1",
    )  # fmt: skip
    process.metrics = metrics
    process.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
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
    # The same count on the worker's own metrics port, where Prometheus scrapes it (WORKER_METRICS_PORT).
    from prometheus_client.parser import text_string_to_metric_families

    page = urllib.request.urlopen(worker.metrics_url, timeout=10).read().decode()
    served = sum(
        sample.value
        for family in text_string_to_metric_families(page)
        for sample in family.samples
        if sample.name == "crm_segment_updates_total" and sample.labels["status"] == "updated"
    )
    assert served == 40


def test_crm_updates_on_two_gunicorn_workers_add_up_on_metrics(tmp_path, scientist, approver, django_user_model):
    from concurrent.futures import ThreadPoolExecutor

    from rest_framework.authtoken.models import Token

    from tests.e2e.test_processes import _free_port, _status

    def up():
        try:
            return _status(f"{base}/health") == 200
        except TimeoutError:  # the first request loads the model; a busy machine takes its time
            return False

    from tests.serving.crm.helpers import CRM_PERMS, crm_user

    churn_promote(churn_version_register(by=scientist), scientist=scientist, approver=approver)
    customers_make(60)
    token = Token.objects.create(user=crm_user(django_user_model, "cora", *CRM_PERMS)).key
    port, metrics = _free_port(), tmp_path / "prometheus"
    process = processes.start(
        "gunicorn", "-c", "gunicorn.conf.py", "mlops_site.wsgi:application",
        log=tmp_path / "gunicorn.log",
        GUNICORN_BIND=f"127.0.0.1:{port}", GUNICORN_WORKERS="2", PROMETHEUS_MULTIPROC_DIR=str(metrics),
        SERVING_SIGNAL_FILE=str(tmp_path / "signal"),
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def update(customer_id):
        request = urllib.request.Request(
            f"{base}/crm_segment_update?customer_id={customer_id}",
            method="POST",
            headers={"Authorization": f"Token {token}"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())["status"]

    try:
        processes.wait_for(up, timeout=120, process=process, what="gunicorn")
        with ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(update, [f"CUST_{i:05d}" for i in range(1, 61)]))
        assert statuses == ["updated"] * 60
        assert len({path.name.split("_")[-1] for path in metrics.glob("counter_*.db")}) == 2  # both workers answered
        text = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
        counted = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("crm_segment_updates_total{") and 'status="updated"' in line
        )
        assert counted == 60
    finally:
        processes.stop(process)
    assert SegmentChange.objects.count() == 60
