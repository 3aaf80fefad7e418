"""Stopping a run: queued, mid-training, a whole sweep; through the service, the API and the admin."""

import pytest
from django.urls import reverse

from experiments import services
from experiments.models import Run
from experiments.signals import run_progress
from governance.models import AuditEntry

pytestmark = pytest.mark.django_db


def _queued(by, **kwargs):
    return services.run_launch(experiment="kill", dataset="iris", algorithm="random_forest", by=by, **kwargs)


def test_a_killed_queued_run_is_not_trained_when_its_task_arrives(user, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        run = _queued(user)
    services.run_kill(run_id=run.pk, by=user, reason="wrong dataset")
    services.run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == Run.Status.KILLED
    assert run.error == "wrong dataset"
    assert not run.artifacts.exists()
    entry = AuditEntry.objects.get(action="run.killed", object_id=str(run.pk))
    assert entry.actor == user
    assert entry.reason == "wrong dataset"


def test_a_run_killed_while_training_stops_and_keeps_nothing(user, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        run = services.run_launch(
            experiment="kill",
            dataset="customer_churn",
            n_samples=2000,
            algorithm="gradient_boosting",
            params={"n_estimators": 400},
            by=user,
        )
    seen = []

    def kill_midway(sender, run_id, fraction, message, **kwargs):
        seen.append(fraction)
        if fraction > 0.2 and Run.objects.get(pk=run_id).status == Run.Status.RUNNING:
            services.run_kill(run_id=run_id, by=user)

    run_progress.connect(kill_midway, sender=Run)
    try:
        services.run_execute(run_id=run.pk)
    finally:
        run_progress.disconnect(kill_midway, sender=Run)
    run.refresh_from_db()
    assert run.status == Run.Status.KILLED
    assert max(seen) < 0.85  # stopped during the fit, before evaluation
    assert not run.artifacts.exists()
    assert not run.metrics.exists()


def test_killing_a_sweep_stops_its_unfinished_members(user, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        parent = _queued(user, sweep={"max_depth": [2, 3, 4]})
    services.run_kill(run_id=parent.pk, by=user)
    assert set(parent.children.values_list("status", flat=True)) == {Run.Status.KILLED}


def test_api_kill_returns_the_run_and_409_once_ended(api_client, user, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        run = _queued(user)
    response = api_client.post(f"/api/v1/runs/{run.pk}/kill", {"reason": "not needed"}, format="json")
    assert response.status_code == 200
    assert response.json()["status"] == "KILLED"
    again = api_client.post(f"/api/v1/runs/{run.pk}/kill", {}, format="json")
    assert again.status_code == 409
    assert "already ended" in again.json()["error"]
    assert api_client.post("/api/v1/runs/999999/kill", {}, format="json").status_code == 404


def test_admin_stop_action(client, django_user_model, django_capture_on_commit_callbacks):
    admin_user = django_user_model.objects.create_superuser("boss", password="pw-boss-1")
    client.force_login(admin_user)
    with django_capture_on_commit_callbacks(execute=False):
        run = _queued(admin_user)
    response = client.post(
        reverse("admin:experiments_run_changelist"),
        {
            "action": "kill_runs",
            "_selected_action": [run.pk],
        },
        follow=True,
    )
    assert f"Stopped #{run.pk}" in response.content.decode()
    run.refresh_from_db()
    assert run.status == Run.Status.KILLED


def test_a_data_scientist_stops_their_own_runs_but_not_anothers(
    user, scientist, engineer, api_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        theirs = _queued(scientist)
        mine = _queued(user)
    refused = api_client.post(f"/api/v1/runs/{theirs.pk}/kill", {}, format="json")
    assert refused.status_code == 403
    assert "stop_any_run" in refused.json()["error"]
    assert api_client.post(f"/api/v1/runs/{mine.pk}/kill", {}, format="json").status_code == 200
    services.run_kill(run_id=theirs.pk, by=engineer)  # an ML engineer may stop anyone's
    theirs.refresh_from_db()
    assert theirs.status == Run.Status.KILLED
