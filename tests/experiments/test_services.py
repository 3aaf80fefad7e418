"""Run services end to end in this process: training, sweeps, faults, the MLflow mirror and import."""

from datetime import timedelta

import mlflow
import pytest
from django.utils import timezone
from mlflow import MlflowClient
from mlflow.entities import Metric as MlflowMetric

from core.errors import InvalidInput
from core.storage import artifact_path
from experiments import services
from experiments.models import Experiment, Metric, Run
from governance.models import AuditAction, AuditEntry

pytestmark = pytest.mark.django_db


def _actions(run):
    return list(
        AuditEntry.objects.filter(object_type="experiments.run", object_id=str(run.pk))
        .order_by("id")
        .values_list("action", flat=True)
    )


def test_a_run_trains_and_records_params_metrics_history_and_artifacts(launch, user, settings):
    run = launch(dataset="wine", params={"n_estimators": 12, "max_depth": 4}, by=user)
    assert run.status == Run.Status.FINISHED, run.error
    assert run.attempts == 1
    assert run.duration_seconds > 0
    params = dict(run.params.values_list("key", "value"))
    assert (params["n_estimators"], params["max_depth"], params["random_state"]) == ("12", "4", "42")
    assert run.latest_metrics["accuracy"] > 0.8
    assert run.metrics.filter(key="val_accuracy").count() > 1
    paths = set(run.artifacts.values_list("path", flat=True))
    assert {"model/model.joblib", "confusion_matrix.png", "classification_report.txt"} <= paths
    model = run.artifacts.get(path="model/model.joblib")
    assert model.sha256 == run.model_sha256
    assert artifact_path(run.model_path).stat().st_size == model.size_bytes
    assert _actions(run) == ["run.launched", "run.started", "run.finished"]
    assert AuditEntry.objects.get(action="run.launched", object_id=str(run.pk)).actor == user


def test_bad_input_leaves_nothing_behind(launch):
    cases = [
        ({"algorithm": "svm"}, "algorithm"),
        ({"params": {"n_estimators": "x"}}, "params.n_estimators"),
        ({"dataset": "nope"}, "dataset"),
        ({"experiment": " "}, "experiment"),
        ({"sweep": {"max_depth": []}}, "sweep.max_depth"),
        ({"sweep": {"max_depth": ["a"]}}, "sweep.max_depth"),
        ({"sweep": {"n_estimators": [1]}, "params": {"n_estimators": 5}}, "sweep.n_estimators"),
        ({"sweep": {"max_depth": [1, 2]}, "sweep_metric": "speed"}, "sweep_metric"),
    ]
    for kwargs, field in cases:
        with pytest.raises(InvalidInput) as error:
            launch(**kwargs)
        assert error.value.field == field, kwargs
    assert not Run.objects.exists()
    assert not Experiment.objects.exists()
    assert not AuditEntry.objects.filter(object_type="experiments.run").exists()


def test_sweep_grid_parse():
    assert services.sweep_grid_parse("n_estimators=50,100; max_depth=3,5") == {
        "n_estimators": ["50", "100"],
        "max_depth": ["3", "5"],
    }
    for bad in ("n_estimators", "=1,2", "a=1;a=2", "a="):
        with pytest.raises(InvalidInput):
            services.sweep_grid_parse(bad)


@pytest.mark.mlflow
def test_a_sweep_runs_every_combination_and_records_the_best(launch, settings):
    parent = launch(
        dataset="customer_churn",
        n_samples=300,
        algorithm="gradient_boosting",
        params={"n_estimators": 15},
        sweep={"max_depth": [1, 3], "learning_rate": [0.05, 0.3]},
        sweep_metric="log_loss",
    )
    children = list(parent.children.all())
    assert len(children) == 4
    assert {(c.params.get(key="max_depth").value, c.params.get(key="learning_rate").value) for c in children} == {
        ("1", "0.05"),
        ("1", "0.3"),
        ("3", "0.05"),
        ("3", "0.3"),
    }
    assert parent.status == Run.Status.FINISHED
    best = min(children, key=lambda child: child.latest_metrics["log_loss"])  # lower loss is better
    assert parent.best_child == best
    assert parent.latest_metrics["log_loss"] == best.latest_metrics["log_loss"]
    mlflow.set_tracking_uri(settings.MLFLOW_TRACKING_URI)
    parent_mlflow = mlflow.get_run(parent.mlflow_run_id)
    assert parent_mlflow.data.tags["mlops_site.best_child_run_id"] == str(best.pk)
    for child in children:
        assert mlflow.get_run(child.mlflow_run_id).data.tags["mlflow.parentRunId"] == parent.mlflow_run_id


def test_a_sweep_whose_runs_all_fail_fails(queue, user):
    parent = queue(sweep={"max_depth": [2, 3]})
    for child in parent.children.all():
        services.run_fail(run_id=child.pk, reason="boom")
    services.sweep_finalize(parent_id=parent.pk)
    parent.refresh_from_db()
    assert parent.status == Run.Status.FAILED
    assert "none of the 2 runs finished" in parent.error


@pytest.mark.mlflow
def test_every_run_is_mirrored_to_mlflow(launch, settings):
    run = launch(experiment="mirror-me", params={"n_estimators": 8})
    assert run.mlflow_synced
    mlflow.set_tracking_uri(settings.MLFLOW_TRACKING_URI)
    found = mlflow.search_runs(experiment_names=["mirror-me"])
    assert list(found["tags.mlops_site.run_id"]) == [str(run.pk)]
    assert found.iloc[0]["params.n_estimators"] == "8"
    assert found.iloc[0]["metrics.accuracy"] == pytest.approx(run.latest_metrics["accuracy"])
    client = MlflowClient(settings.MLFLOW_TRACKING_URI)
    steps = [point.step for point in client.get_metric_history(run.mlflow_run_id, "val_accuracy")]
    assert steps == list(run.metrics.filter(key="val_accuracy").order_by("step").values_list("step", flat=True))
    model = mlflow.pyfunc.load_model(f"runs:/{run.mlflow_run_id}/model")
    frame = services.dataset_frame_load(version=run.dataset).drop(columns=["target"]).head(4)
    assert list(model.predict(frame)) == list(__import__("joblib").load(artifact_path(run.model_path)).predict(frame))


@pytest.mark.mlflow
def test_an_unreachable_mlflow_does_not_stop_the_run_and_the_mirror_is_retried(launch, settings, mlflow_store):
    settings.MLFLOW_TRACKING_URI = "http://127.0.0.1:9"  # nothing listens there
    run = launch(experiment="mlflow-down")
    assert run.status == Run.Status.FINISHED
    assert not run.mlflow_synced
    assert run.mlflow_sync_error

    settings.MLFLOW_TRACKING_URI = mlflow_store["uri"]
    assert services.runs_mirror_pending() == (1, 0)
    run.refresh_from_db()
    assert run.mlflow_synced
    assert run.mlflow_sync_error == ""
    mlflow.set_tracking_uri(mlflow_store["uri"])
    assert len(mlflow.search_runs(experiment_names=["mlflow-down"])) == 1


def test_a_failing_run_records_the_reason(launch):
    from experiments.services import dataset_version_builtin

    version, _ = dataset_version_builtin(name="iris")
    artifact_path(version.path).write_bytes(b"corrupted")
    run = launch()
    assert run.status == Run.Status.FAILED
    assert "sha256" in run.error
    assert _actions(run)[-1] == "run.failed"


def test_running_a_finished_run_again_changes_nothing(launch):
    run = launch()
    metrics_before = Metric.objects.filter(run=run).count()
    services.run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.attempts == 1
    assert Metric.objects.filter(run=run).count() == metrics_before


def test_a_redelivered_run_is_restarted_then_failed_after_max_attempts(queue, settings):
    run = queue()
    Run.objects.filter(pk=run.pk).update(status=Run.Status.RUNNING, attempts=1)  # its worker died
    services.run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert (run.status, run.attempts) == (Run.Status.FINISHED, 2)

    lost = queue()
    Run.objects.filter(pk=lost.pk).update(status=Run.Status.RUNNING, attempts=settings.RUN_MAX_ATTEMPTS)
    services.run_execute(run_id=lost.pk)
    lost.refresh_from_db()
    assert lost.status == Run.Status.FAILED
    assert "worker lost" in lost.error


def test_the_reaper_fails_runs_whose_heartbeat_stopped(queue, settings):
    run = queue()
    stale = timezone.now() - timedelta(seconds=settings.RUN_HEARTBEAT_TIMEOUT + 60)
    Run.objects.filter(pk=run.pk).update(status=Run.Status.RUNNING, heartbeat_at=stale)
    fresh = queue()
    Run.objects.filter(pk=fresh.pk).update(status=Run.Status.RUNNING, heartbeat_at=timezone.now())
    assert services.runs_reap_lost() == [run.pk]
    run.refresh_from_db()
    assert run.status == Run.Status.FAILED
    assert run.error.startswith("worker lost: no heartbeat since")
    assert Run.objects.get(pk=fresh.pk).status == Run.Status.RUNNING


def test_the_reaper_fails_a_run_whose_broker_message_was_lost(queue, settings):
    settings.RUN_QUEUED_TIMEOUT = 600
    lost = queue()  # its message never reaches a worker
    Run.objects.filter(pk=lost.pk).update(created_at=timezone.now() - timedelta(seconds=601))
    waiting = queue()  # queued a moment ago, behind a busy worker
    assert services.runs_reap_lost() == [lost.pk]
    lost.refresh_from_db()
    assert lost.status == Run.Status.FAILED
    assert "still queued after 600 s" in lost.error
    entry = AuditEntry.objects.filter(action=AuditAction.RUN_FAILED, object_id=str(lost.pk)).get()
    assert "broker message was lost" in entry.reason
    assert Run.objects.get(pk=waiting.pk).status == Run.Status.QUEUED
    # The message turning up late afterwards does nothing: the run stays failed, not half-run.
    services.run_execute(run_id=lost.pk)
    lost.refresh_from_db()
    assert (lost.status, lost.attempts) == (Run.Status.FAILED, 0)


def test_the_reaper_closes_a_sweep_whose_chord_never_fired(queue, launch):
    parent = queue(sweep={"max_depth": [2, 3]})
    for child in parent.children.all():
        services.run_execute(run_id=child.pk)
    services.runs_reap_lost()
    parent.refresh_from_db()
    assert parent.status == Run.Status.FINISHED
    assert parent.best_child is not None


def _make_foreign_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'other.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("legacy", artifact_location=(tmp_path / "a").as_uri())
    parent = client.create_run(experiment_id, run_name="old-sweep")
    child = client.create_run(experiment_id, run_name="old-child", tags={"mlflow.parentRunId": parent.info.run_id})
    client.log_param(child.info.run_id, "alpha", "0.5")
    client.log_batch(child.info.run_id, metrics=[MlflowMetric("loss", 1.0 / (step + 1), 0, step) for step in range(5)])
    for run in (child, parent):
        client.set_terminated(run.info.run_id)
    return uri, parent.info.run_id, child.info.run_id


def test_import_from_an_existing_mlflow_store_is_idempotent(tmp_path, user):
    uri, parent_id, child_id = _make_foreign_store(tmp_path)
    counts = services.mlflow_import(tracking_uri=uri, by=user)
    assert counts == {"experiments": 1, "runs": 2, "skipped": 0}
    child = Run.objects.get(mlflow_run_id=child_id)
    assert child.parent.mlflow_run_id == parent_id
    assert child.experiment.name == "legacy"
    assert dict(child.params.values_list("key", "value")) == {"alpha": "0.5"}
    assert list(child.metrics.filter(key="loss").values_list("step", flat=True)) == [0, 1, 2, 3, 4]
    assert child.status == Run.Status.FINISHED

    assert services.mlflow_import(tracking_uri=uri, by=user) == {"experiments": 0, "runs": 0, "skipped": 2}
    assert Run.objects.count() == 2


@pytest.mark.mlflow
def test_import_skips_the_runs_we_mirrored_ourselves(launch, user, settings, tmp_path):
    settings.MLFLOW_TRACKING_URI = f"sqlite:///{tmp_path / 'own.db'}"
    run = launch(experiment="ours")
    counts = services.mlflow_import(tracking_uri=settings.MLFLOW_TRACKING_URI, by=user)
    assert counts == {"experiments": 0, "runs": 0, "skipped": 1}
    assert Run.objects.filter(experiment__name="ours").count() == 1
    assert Run.objects.get(experiment__name="ours") == run


def test_runs_record_the_git_commit_of_the_code(launch, settings):
    import subprocess

    from experiments.services.execution import source_commit

    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    source_commit.cache_clear()
    assert launch().source_commit == head
    settings.SOURCE_COMMIT = "0123456789abcdef0123456789abcdef01234567"  # an image built without .git
    source_commit.cache_clear()
    try:
        assert launch().source_commit == settings.SOURCE_COMMIT
    finally:
        source_commit.cache_clear()
