"""Training through a real Celery worker process over the configured broker (Redis in CI).

The worker is started as a subprocess against the test database, so these tests commit
their data (transactional_db) and poll the run the way a user polls the API.
"""

import os
import signal
import subprocess
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command

from experiments.models import Run
from governance.models import AuditEntry
from tests.e2e import processes

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def _ended(run_id):
    run = Run.objects.get(pk=run_id)
    mirrored = run.mlflow_synced or run.mlflow_sync_error or not settings.MLFLOW_MIRROR_ENABLED
    return run if run.is_terminal and mirrored else None


@pytest.mark.mlflow
def test_run_posted_to_the_api_is_trained_by_the_worker_and_mirrored(worker, api_client):
    response = api_client.post(
        "/api/v1/runs",
        {"experiment": "worker-e2e", "dataset": "iris", "algorithm": "random_forest", "params": {"n_estimators": 20}},
        format="json",
    )
    assert response.status_code == 202, response.json()
    run_id = response.json()["id"]
    assert Run.objects.get(pk=run_id).status == Run.Status.QUEUED

    run = processes.wait_for(lambda: _ended(run_id), timeout=180, process=worker, what=f"run {run_id}")

    assert run.status == Run.Status.FINISHED, run.error
    assert run.celery_task_id
    assert run.latest_metrics["accuracy"] > 0.8
    body = api_client.get(f"/api/v1/runs/{run_id}").json()
    assert body["status"] == "FINISHED"
    assert body["params"]["n_estimators"] == "20"
    assert body["mlflow_synced"] is True
    import mlflow

    mlflow.set_tracking_uri(settings.MLFLOW_TRACKING_URI)
    found = mlflow.search_runs(experiment_names=["worker-e2e"], filter_string=f"tags.`mlops_site.run_id` = '{run_id}'")
    assert len(found) == 1
    assert found.iloc[0]["metrics.accuracy"] == pytest.approx(run.latest_metrics["accuracy"])
    assert list(
        AuditEntry.objects.filter(object_type="experiments.run", object_id=str(run_id))
        .order_by("id")
        .values_list("action", flat=True)
    ) == ["run.launched", "run.started", "run.finished"]


def test_sweep_queued_from_the_cli_runs_its_children_in_parallel_and_picks_the_best(worker, scientist):
    out = StringIO()
    call_command(
        "train",
        "--user",
        scientist.username,
        "--experiment",
        "worker-sweep",
        "--dataset",
        "customer_churn",
        "--n-samples",
        "400",
        "--algorithm",
        "gradient_boosting",
        "--param",
        "n_estimators=20",
        "--sweep",
        "max_depth=1,2;learning_rate=0.1,0.3",
        "--queue",
        stdout=out,
        stderr=StringIO(),
    )
    parent_id = int(out.getvalue().strip().splitlines()[-1])

    parent = processes.wait_for(lambda: _ended(parent_id), timeout=240, process=worker, what=f"sweep {parent_id}")

    children = list(parent.children.all())
    assert len(children) == 4
    assert all(child.status == Run.Status.FINISHED for child in children)
    assert parent.status == Run.Status.FINISHED
    best = max(children, key=lambda child: child.latest_metrics["accuracy"])
    assert parent.best_child.latest_metrics["accuracy"] == best.latest_metrics["accuracy"]
    # The children ran on two pool processes at once: their run times overlap.
    spans = sorted((child.start_time, child.end_time) for child in children)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))


def _pool_children(pid):
    result = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(line) for line in result.stdout.split()]


@pytest.mark.skipif(not settings.CELERY_BROKER_URL.startswith("redis"), reason="requeue on worker loss needs Redis")
def test_run_whose_worker_process_is_killed_is_retried_not_left_running(worker, scientist):
    out = StringIO()
    call_command(
        "train",
        "--user",
        scientist.username,
        "--experiment",
        "worker-kill",
        "--dataset",
        "customer_churn",
        "--n-samples",
        "20000",
        "--algorithm",
        "gradient_boosting",
        "--param",
        "n_estimators=300",
        "--param",
        "max_depth=4",
        "--queue",
        stdout=out,
        stderr=StringIO(),
    )
    run_id = int(out.getvalue().strip().splitlines()[-1])
    processes.wait_for(
        lambda: Run.objects.filter(pk=run_id, status=Run.Status.RUNNING, progress__gt=0.15).exists(),
        timeout=120,
        process=worker,
        what="the run to be training",
    )
    for pid in _pool_children(worker.pid):
        os.kill(pid, signal.SIGKILL)  # the pool process dies mid-fit, as on an OOM kill

    run = processes.wait_for(lambda: _ended(run_id), timeout=300, process=worker, what=f"run {run_id} after the kill")

    assert run.status == Run.Status.FINISHED, run.error
    assert run.attempts == 2
    actions = list(
        AuditEntry.objects.filter(object_type="experiments.run", object_id=str(run_id))
        .order_by("id")
        .values_list("action", flat=True)
    )
    assert actions == ["run.launched", "run.started", "run.started", "run.finished"]


def test_a_large_upload_is_profiled_by_the_worker_while_the_api_answers_202(worker, api_client, settings, tmp_path):
    """The web process answers 202 at once; the real worker parses and stores the CSV; the status URL says so."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from experiments.models import DatasetVersion

    settings.DATASET_INLINE_MAX_BYTES = 1000  # this process's limit: the worker reads the same store
    csv = b"a,b,label\n" + b"".join(b"%d,%d,%s\n" % (i, i * 3 % 11, b"xy"[i % 2 : i % 2 + 1]) for i in range(2000))
    accepted = api_client.post(
        "/api/v1/datasets",
        {"name": "from-the-worker", "target": "label", "file": SimpleUploadedFile("big.csv", csv)},
        format="multipart",
    )
    assert accepted.status_code == 202, accepted.content
    status_url = accepted.json()["status_url"]

    def stored():
        body = api_client.get(status_url).json()
        return body if body["status"] in ("DONE", "FAILED") else None

    done = processes.wait_for(stored, timeout=120, process=worker, what="the worker to profile the upload")
    assert done["status"] == "DONE", done
    version = DatasetVersion.objects.get(name="from-the-worker")
    assert (version.n_rows, version.size_bytes) == (2000, len(csv))
