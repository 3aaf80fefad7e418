"""The platform as it scales out: two web servers and two workers on different queues, one PostgreSQL and one
Redis. A run launched through the API trains on the training worker; a promotion approved afterwards reaches
both web servers (through the shared serving signal file) and its webhook is sent by the default worker."""

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.contrib.auth import get_user_model

from experiments.models import Run
from governance.models import WebhookDelivery, WebhookSubscription
from governance.services.webhooks import webhook_subscription_save
from registry import services
from tests.e2e import processes
from tests.e2e.test_processes import _free_port, _status
from tests.e2e.test_serving import _predict

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def _worker(tmp_path, name, queues):
    return processes.start(
        "celery",
        "-A",
        "mlops_site",
        "worker",
        "--queues",
        queues,
        "--concurrency",
        "1",
        "--loglevel",
        "INFO",
        "--hostname",
        f"{name}-{uuid.uuid4().hex[:8]}@%h",
        "--without-gossip",
        "--without-mingle",
        log=tmp_path / f"{name}.log",
    )


@pytest.fixture
def receiver():
    """A webhook endpoint on the loopback that records the events it is sent."""
    events = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            events.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", events
    server.shutdown()


def test_two_web_servers_and_two_workers_share_one_database_and_broker(
    tmp_path, settings, register, promote, api_client, receiver, django_capture_on_commit_callbacks
):
    signal_file = tmp_path / "signal"
    settings.SERVING_SIGNAL_FILE = str(signal_file)
    with django_capture_on_commit_callbacks(execute=True):
        promote(register())  # v1 in Production before anything starts
    url, events = receiver
    admin = get_user_model().objects.create_superuser("ops", password="x")
    webhook_subscription_save(
        subscription=WebhookSubscription(name="scale", url=url, secret="s3cret", events=[]), by=admin
    )

    processes.purge_queues()
    started = []
    try:
        bases = []
        for name in ("web-a", "web-b"):
            port = _free_port()
            (tmp_path / name).mkdir()
            started.append(
                processes.start_web(
                    tmp_path / name,
                    port=port,
                    workers=1,
                    SERVING_REQUIRE_AUTH="0",
                    SERVING_DEFAULT_MODEL="iris-clf",
                    SERVING_SIGNAL_FILE=str(signal_file),
                    PROMETHEUS_MULTIPROC_DIR=str(tmp_path / name / "prometheus"),
                )
            )
            bases.append(f"http://127.0.0.1:{port}")
        training = _worker(tmp_path, "training", "training")
        default = _worker(tmp_path, "default", "default")
        started += [training, default]
        for base, process in zip(bases, started, strict=False):
            processes.wait_for(lambda b=base: _status(f"{b}/health") == 200, timeout=90, process=process, what=base)
            assert _predict(base)["version"] == 1

        response = api_client.post(
            "/api/v1/runs",
            {"experiment": "scale", "dataset": "iris", "algorithm": "random_forest", "params": {"n_estimators": 10}},
            format="json",
        )
        assert response.status_code == 202, response.json()
        run_id = response.json()["id"]
        run = processes.wait_for(
            lambda: (run := Run.objects.get(pk=run_id)).is_terminal and run,
            timeout=180,
            process=training,
            what=f"run {run_id} trained",
        )
        assert run.status == Run.Status.FINISHED, run.error
        assert f"experiments.train_run[{run.celery_task_id}]" in training.log.read_text()
        assert run.celery_task_id not in default.log.read_text()  # the training queue is the training worker's

        version = services.model_version_register(run_id=run.pk, model_name="iris-clf", by=run.created_by)
        with django_capture_on_commit_callbacks(execute=True):
            promote(version)
        for base, process in zip(bases, started, strict=False):
            processes.wait_for(
                lambda b=base: _predict(b)["version"] == 2, timeout=30, process=process, what=f"v2 on {base}"
            )
        processes.wait_for(
            lambda: (
                not WebhookDelivery.objects.exclude(status=WebhookDelivery.Status.DELIVERED).exists()
                and WebhookDelivery.objects.exists()
            ),
            timeout=60,
            process=default,
            what="the webhooks delivered",
        )
        assert "Task governance.deliver_webhook[" in default.log.read_text()
        assert "Task governance.deliver_webhook[" not in training.log.read_text()
        promoted = [e["data"] for e in events if e["event"] == "version.stage_changed" and e["data"]["version"] == 2]
        assert promoted == [{**promoted[0], "model": "iris-clf", "stage": "Production"}], events
    finally:
        for process in started:
            processes.stop(process)
