"""Scheduling: one run per (job, model), the beat schedule, the reference made at registration, a real worker."""

import os
import signal
import subprocess
import uuid

import pytest
from django.conf import settings
from django.db import connection

from mlops_site.celery import app as celery_app
from monitoring.models import DriftReference, DriftRun, MonitoringJob
from monitoring.services import JobBusy, job_lock, job_run
from tests.e2e import processes
from tests.helpers import worker_runs_what_is_queued
from tests.monitoring.conftest import CHURN_FEATURES, hours_ago


@pytest.mark.django_db(transaction=True)
def test_one_run_per_job_and_model_at_a_time():
    with job_lock(job="aggregate", model_name="churn", lease_seconds=60):
        if connection.vendor == "postgresql":
            # The advisory lock is held by this connection: another connection is refused.
            from django.db import connections

            other = connections.create_connection("default")
            try:
                with other.cursor() as cursor:
                    cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [0x6D6F6E, _key("aggregate", "churn")])
                    assert cursor.fetchone()[0] is False
            finally:
                other.close()
        with pytest.raises(JobBusy, match="aggregate of churn is already running"):
            job_run(job="aggregate", model_name="churn")
        # Another model, or another job, is not held up.
        with job_lock(job="aggregate", model_name="iris", lease_seconds=60):
            pass
        with job_lock(job="drift", model_name="churn", lease_seconds=60):
            pass
    job_run(job="aggregate", model_name="churn")  # free again
    assert MonitoringJob.objects.get(job="aggregate", model_name="churn").status == MonitoringJob.Status.OK


def _key(job, model_name):
    from monitoring.services.jobs import _lock_key

    return _lock_key(job, model_name)


def test_the_jobs_are_scheduled_with_a_reason_each():
    schedule = settings.CELERY_BEAT_SCHEDULE
    assert schedule["monitoring-hourly"]["task"] == "monitoring.schedule_jobs"
    assert schedule["prediction-log-retention"]["task"] == "serving.prediction_log_retention"
    source = (settings.BASE_DIR / "mlops_site" / "settings.py").read_text()
    for name in ("monitoring-hourly", "prediction-log-retention"):
        before = source[: source.index(f'"{name}"')].rstrip().splitlines()[-1].strip()
        assert before.startswith("#"), f"{name} has no comment saying why"
    tasks = celery_app.tasks
    for name in ("monitoring.schedule_jobs", "monitoring.run_job", "monitoring.build_reference"):
        assert tasks[name].queue == "monitoring"
    assert tasks["monitoring.run_job"].acks_late is True
    assert tasks["monitoring.run_job"].time_limit == settings.MONITORING_JOB_TIME_LIMIT


@pytest.mark.django_db
def test_registration_builds_the_reference_once_committed(churn_version, django_capture_on_commit_callbacks, register):
    with worker_runs_what_is_queued(), django_capture_on_commit_callbacks(execute=True) as callbacks:
        version = register(name="iris-reference")  # its own name: the MLflow store is shared by the session
    assert callbacks
    reference = DriftReference.objects.get(version=version)
    assert reference.n_rows == 150
    assert reference.columns.filter(role="feature").count() == 4
    assert reference.build_seconds < 5
    # churn v1 was registered without its callbacks run: no reference until the backfill.
    assert not DriftReference.objects.filter(version=churn_version).exists()


def _monitoring_worker(tmp_path):
    """A real worker on the monitoring queue (prefork, two processes)."""
    processes.purge_queues()
    return processes.start(
        "celery",
        "-A",
        "mlops_site",
        "worker",
        "--queues",
        "monitoring",
        "--concurrency",
        "2",
        "--loglevel",
        "INFO",
        "--hostname",
        f"monitoring-{uuid.uuid4().hex[:8]}@%h",
        "--without-gossip",
        "--without-mingle",
        log=tmp_path / "worker.log",
    )


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_the_hourly_task_runs_every_job_on_a_real_worker(churn_reference, churn_frame, log_writer, tmp_path):
    log_writer.write(churn_frame.sample(200, random_state=5).reset_index(drop=True), at=hours_ago(2), per_request=10)
    worker = _monitoring_worker(tmp_path)
    try:
        celery_app.send_task("monitoring.schedule_jobs", queue="monitoring")

        def both_done():
            jobs = MonitoringJob.objects.filter(model_name="churn", status=MonitoringJob.Status.OK)
            return jobs.count() == 2 or None

        processes.wait_for(both_done, timeout=150, process=worker, what="the aggregate and drift jobs")
    finally:
        processes.stop(worker)
    drift = MonitoringJob.objects.get(job="drift", model_name="churn")
    assert drift.last_result["versions"][0]["rows"] == 200
    run = DriftRun.objects.get(trigger="schedule")
    assert run.status == DriftRun.Status.OK
    assert run.window == "24h"


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(not settings.CELERY_BROKER_URL.startswith("redis"), reason="requeue on worker loss needs Redis")
def test_a_drift_job_whose_worker_is_killed_is_completed_by_the_next_run(
    churn_reference, churn_frame, log_writer, tmp_path
):
    """The pool process running the drift job dies mid-computation (an OOM kill): its advisory lock goes with
    its connection, the message (acknowledged late) is delivered again, and the next run computes the whole
    window: one drift run stored with every row, none half-written, the job OK."""
    frame = churn_frame.sample(5000, replace=True, random_state=7).reset_index(drop=True)
    rows = 20 * 2 * len(frame)
    for hour in range(1, 21):  # 200,000 rows in the window: a second or more of computation to be caught in
        for minute in (10, 40):
            log_writer.write(frame, at=hours_ago(hour, minute=minute), per_request=5000)
    worker = _monitoring_worker(tmp_path)
    try:
        celery_app.send_task("monitoring.run_job", args=["drift", "churn"], queue="monitoring")

        def computing():
            job = MonitoringJob.objects.filter(job="drift", model_name="churn").first()
            return job if job and job.status == MonitoringJob.Status.RUNNING and job.progress_message == "v1" else None

        processes.wait_for(computing, timeout=120, process=worker, what="the drift job to be computing")
        killed = _pool_children(worker.pid)
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        assert not DriftRun.objects.exists()  # killed before it stored anything

        log = tmp_path / "worker.log"

        def done():
            job = MonitoringJob.objects.get(job="drift", model_name="churn")
            if job.status == MonitoringJob.Status.OK:
                return job
            if "already running: skipped" in log.read_text() and not resent:
                # The kill landed during a query: the dead process's database session lives until that query
                # ends, holding the job's lock, so the message delivered again found it busy and was skipped.
                # The next run (the hourly schedule's) completes the window; sent now rather than in an hour.
                resent.append(celery_app.send_task("monitoring.run_job", args=["drift", "churn"], queue="monitoring"))
            return None

        resent = []
        job = processes.wait_for(done, timeout=180, process=worker, what="the drift job after the kill")
    finally:
        processes.stop(worker)
    assert killed
    run = DriftRun.objects.get()  # stored once, whole
    assert run.status == DriftRun.Status.OK
    assert run.rows == rows
    assert set(CHURN_FEATURES) <= set(run.results.values_list("name", flat=True))  # every column computed
    assert job.runs == 1
    assert job.last_result["versions"][0]["rows"] == rows
    assert "WorkerLostError" in log.read_text()  # the worker saw its process die


def _pool_children(pid):
    result = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(line) for line in result.stdout.split()]
