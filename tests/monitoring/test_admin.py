"""The monitoring admin as an operator sees it: jobs with progress and last result, drift runs, references."""

import pytest
from django.urls import reverse

from monitoring.models import DriftRun, MonitoringJob
from monitoring.services import drift_compute, job_run
from monitoring.windows import window_parse
from tests.helpers import worker_runs_what_is_queued
from tests.monitoring.conftest import hours_ago

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("root", password="pw-root-1")
    client.force_login(user)
    return client


def test_jobs_drift_runs_and_references_in_the_admin(admin_client, churn_reference, churn_frame, log_writer):
    shifted = churn_frame.sample(200, random_state=8).reset_index(drop=True)
    shifted["monthly_charges"] += 30
    log_writer.write(shifted, at=hours_ago(1), per_request=10)
    job_run(job="aggregate", model_name="churn")
    job_run(job="drift", model_name="churn")

    page = admin_client.get(reverse("admin:monitoring_monitoringjob_changelist")).content.decode()
    assert "hourly aggregates and sketches" in page
    assert "drift of the last 24 hours" in page
    assert "drifted: monthly_charges" in page
    assert "width:100%" in page  # the progress bar, complete
    job = MonitoringJob.objects.get(job="drift")
    detail = admin_client.get(reverse("admin:monitoring_monitoringjob_change", args=[job.pk])).content.decode()
    assert "&quot;window&quot;: &quot;24h&quot;" in detail

    run = DriftRun.objects.get()
    listing = admin_client.get(reverse("admin:monitoring_driftrun_changelist")).content.decode()
    assert "drift (" in listing or "no drift (" in listing
    page = admin_client.get(reverse("admin:monitoring_driftrun_change", args=[run.pk])).content.decode()
    assert "monthly_charges" in page
    assert "jensenshannon" in page
    assert admin_client.get(reverse("admin:monitoring_hourlyaggregate_changelist")).status_code == 200
    assert admin_client.get(reverse("admin:monitoring_driftreference_changelist")).status_code == 200
    assert admin_client.get(reverse("admin:monitoring_driftrun_add")).status_code == 403


def test_run_now_queues_the_job(admin_client, churn_reference):
    job_run(job="aggregate", model_name="churn")
    job = MonitoringJob.objects.get()
    with worker_runs_what_is_queued():
        response = admin_client.post(
            reverse("admin:monitoring_monitoringjob_changelist"),
            {"action": "run_now", "_selected_action": [job.pk]},
            follow=True,
        )
    assert "queued; its progress shows here" in response.content.decode()
    job.refresh_from_db()
    assert job.runs == 2


def test_a_run_without_reference_shows_why(admin_client, churn_version):
    run = drift_compute(model_name="churn", window=window_parse("24h"))
    page = admin_client.get(reverse("admin:monitoring_driftrun_changelist")).content.decode()
    assert "no reference" in page
    assert run.status == "no_reference"
