"""The admin as an approver or data scientist uses it: launch, watch, compare, download, upload."""

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from core.storage import artifact_path
from experiments import services
from experiments.models import DatasetVersion, Run
from governance.models import AuditEntry
from tests.helpers import run_dispatches

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("boss", password="pw-boss-1")
    client.force_login(user)
    client.user = user
    return client


@pytest.fixture
def finished_runs(admin_client, django_capture_on_commit_callbacks):
    runs = []
    for depth in (2, 3):
        run = services.run_launch(
            experiment="admin-e",
            dataset="customer_churn",
            n_samples=300,
            algorithm="gradient_boosting",
            params={"n_estimators": 10, "max_depth": depth},
            inline=True,
            by=admin_client.user,
        )
        runs.append(run)
    return runs


def test_changelist_shows_runs_with_metric_columns_and_the_launch_button(admin_client, finished_runs):
    response = admin_client.get(reverse("admin:experiments_run_changelist"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Launch training run" in html
    assert f"{finished_runs[0].latest_metrics['accuracy']:.4f}" in html
    assert "FINISHED" in html


def test_changelist_filters_by_status_algorithm_and_dataset(admin_client, finished_runs):
    url = reverse("admin:experiments_run_changelist")
    for query in (
        "?status__exact=FINISHED",
        "?algorithm=gradient_boosting",
        f"?dataset__id__exact={finished_runs[0].dataset_id}",
        "?kind=top",
    ):
        response = admin_client.get(url + query)
        assert response.status_code == 200
        assert response.context["cl"].result_count == 2
    assert admin_client.get(url + "?status__exact=FAILED").context["cl"].result_count == 0


def test_launch_form_queues_a_run_through_the_service(admin_client, django_capture_on_commit_callbacks):
    url = reverse("admin:experiments_run_launch")
    assert "random_forest" in admin_client.get(url).content.decode()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = admin_client.post(
            url,
            {
                "experiment": "from-admin",
                "dataset": "iris",
                "algorithm": "random_forest",
                "params": "n_estimators=15\nmax_depth=4",
                "sweep": "",
                "sweep_metric": "accuracy",
            },
        )
    run = Run.objects.get(experiment__name="from-admin")
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:experiments_run_change", args=[run.pk])
    assert run.status == Run.Status.QUEUED
    assert dict(run.params.values_list("key", "value"))["n_estimators"] == "15"
    assert len(run_dispatches(callbacks)) == 1  # the Celery dispatch, sent once the transaction commits
    entry = AuditEntry.objects.get(action="run.launched", object_id=str(run.pk))
    assert entry.actor == admin_client.user


def test_launch_form_shows_a_bad_param_on_its_field_and_creates_nothing(admin_client):
    response = admin_client.post(
        reverse("admin:experiments_run_launch"),
        {
            "experiment": "from-admin",
            "dataset": "iris",
            "algorithm": "random_forest",
            "params": "n_estimators=lots",
            "sweep": "",
            "sweep_metric": "accuracy",
        },
    )
    assert response.status_code == 200
    assert "must be an integer" in str(response.context["form"].errors["params"])
    assert not Run.objects.exists()


def test_launch_form_sweep_creates_a_parent_and_children(admin_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        admin_client.post(
            reverse("admin:experiments_run_launch"),
            {
                "experiment": "sweep-admin",
                "dataset": "iris",
                "algorithm": "random_forest",
                "params": "",
                "sweep": "n_estimators=5,10;max_depth=2,3",
                "sweep_metric": "f1_macro",
            },
        )
    parent = Run.objects.get(experiment__name="sweep-admin", parent__isnull=True)
    assert parent.children.count() == 4
    assert parent.sweep_metric == "f1_macro"


def test_launch_is_refused_by_the_service_without_the_add_run_permission(client, django_user_model):
    viewer = django_user_model.objects.create_user("viewer", password="pw-viewer-1", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_run"))
    client.force_login(viewer)
    assert "Launch training run" not in client.get(reverse("admin:experiments_run_changelist")).content.decode()
    form = {
        "experiment": "e",
        "dataset": "iris",
        "algorithm": "random_forest",
        "params": "",
        "sweep_metric": "accuracy",
    }
    response = client.post(reverse("admin:experiments_run_launch"), form)
    assert "viewer may not launch training runs: it needs the add_run permission" in response.content.decode()
    assert not Run.objects.exists()


def test_compare_view_puts_params_and_metrics_side_by_side_with_history_charts(admin_client, finished_runs):
    ids = ",".join(str(run.pk) for run in finished_runs)
    response = admin_client.get(reverse("admin:experiments_run_compare") + f"?ids={ids}")
    assert response.status_code == 200
    depth_row = next(row for row in response.context["param_rows"] if row["key"] == "max_depth")
    assert depth_row == {"key": "max_depth", "values": ["2", "3"], "differs": True}
    html = response.content.decode()
    assert "<svg" in html
    assert "val_log_loss" in html
    assert f"#{finished_runs[0].pk} max_depth=2" in html  # lines are labelled by the params that differ


def test_compare_action_redirects_to_the_compare_view(admin_client, finished_runs):
    response = admin_client.post(
        reverse("admin:experiments_run_changelist"),
        {
            "action": "compare_runs",
            "_selected_action": [run.pk for run in finished_runs],
        },
    )
    assert response.status_code == 302
    assert "compare/?ids=" in response["Location"]


def test_compare_needs_two_runs(admin_client, finished_runs):
    response = admin_client.get(reverse("admin:experiments_run_compare") + f"?ids={finished_runs[0].pk}")
    assert response.status_code == 302


def test_run_page_shows_params_metrics_artifacts_and_charts(admin_client, finished_runs):
    run = finished_runs[0]
    response = admin_client.get(reverse("admin:experiments_run_change", args=[run.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "confusion_matrix.png" in html
    assert "model/model.joblib" in html
    assert "<svg" in html
    assert 'http-equiv="refresh"' not in html  # a finished run does not refresh itself


def test_artifact_download_checks_the_checksum(admin_client, finished_runs):
    run = finished_runs[0]
    url = reverse("admin:experiments_run_artifact", args=[run.pk, "confusion_matrix.json"])
    response = admin_client.get(url)
    assert response.status_code == 200
    assert b'"labels"' in response.content
    artifact_path(f"runs/{run.pk}/confusion_matrix.json").write_bytes(b"tampered")
    response = admin_client.get(url)
    assert response.status_code == 409
    assert "sha256" in response.content.decode()
    missing = reverse("admin:experiments_run_artifact", args=[run.pk, "nope.txt"])
    assert admin_client.get(missing).status_code == 404


def test_running_run_page_refreshes_and_shows_progress(admin_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        run = services.run_launch(experiment="live", dataset="iris", algorithm="random_forest", by=admin_client.user)
    Run.objects.filter(pk=run.pk).update(status=Run.Status.RUNNING, progress=0.4, progress_message="40/100 trees")
    html = admin_client.get(reverse("admin:experiments_run_change", args=[run.pk])).content.decode()
    assert 'http-equiv="refresh"' in html
    assert "40/100 trees" in html


def test_dataset_upload_in_the_admin(admin_client):
    url = reverse("admin:experiments_datasetversion_add")
    good = SimpleUploadedFile("d.csv", b"a,b,label\n1,2,x\n3,4,y\n5,6,x\n7,8,y\n", content_type="text/csv")
    response = admin_client.post(url, {"name": "tiny", "target": "label", "file": good})
    version = DatasetVersion.objects.get(name="tiny")
    assert response.status_code == 302
    assert version.n_rows == 4
    page = admin_client.get(reverse("admin:experiments_datasetversion_change", args=[version.pk])).content.decode()
    assert "Class balance" in page

    bad = SimpleUploadedFile("d.csv", b"a,b,label\n1,2,x\nzz,4,y\n5,6,x\n7,8,y\n9,1,x\n", content_type="text/csv")
    response = admin_client.post(url, {"name": "broken", "target": "label", "file": bad})
    assert response.status_code == 200
    assert "column 'a' is numeric but line 3" in response.context["form"].errors["file"][0]
    assert not DatasetVersion.objects.filter(name="broken").exists()


def test_a_large_upload_in_the_admin_shows_its_status_until_a_worker_stores_it(
    admin_client, settings, tmp_path, django_capture_on_commit_callbacks
):
    from experiments.models import DatasetUpload
    from experiments.tasks import profile_dataset_upload

    settings.DATASET_INLINE_MAX_BYTES = 100
    settings.ARTIFACT_ROOT = tmp_path
    csv = b"a,b,label\n" + b"".join(b"%d,%d,%s\n" % (i, i % 5, b"xy"[i % 2 : i % 2 + 1]) for i in range(50))
    with django_capture_on_commit_callbacks(execute=False):  # no worker yet
        response = admin_client.post(
            reverse("admin:experiments_datasetversion_add"),
            {"name": "big", "target": "label", "file": SimpleUploadedFile("big.csv", csv, content_type="text/csv")},
            follow=True,
        )
    upload = DatasetUpload.objects.get()
    assert response.redirect_chain[-1][0] == reverse("admin:experiments_datasetupload_change", args=[upload.pk])
    page = response.content.decode()
    assert "a worker is profiling them" in page
    assert "Waiting for a worker" in page
    assert 'http-equiv="refresh"' in page  # until the worker is done
    assert not DatasetVersion.objects.exists()

    profile_dataset_upload.apply(args=[upload.pk])  # what the worker runs
    page = admin_client.get(reverse("admin:experiments_datasetupload_change", args=[upload.pk])).content.decode()
    version = DatasetVersion.objects.get(name="big")
    assert "Stored" in page
    assert 'http-equiv="refresh"' not in page
    assert reverse("admin:experiments_datasetversion_change", args=[version.pk]) in page
    listing = admin_client.get(reverse("admin:experiments_datasetupload_changelist")).content.decode()
    assert "big" in listing
    assert "Stored" in listing


@pytest.mark.mlflow
def test_mirror_action_mirrors_only_runs_not_yet_in_mlflow(admin_client, settings, mlflow_store):
    settings.MLFLOW_TRACKING_URI = "http://127.0.0.1:9"  # MLflow down while the run ends
    run = services.run_launch(
        experiment="late-mirror", dataset="iris", algorithm="random_forest", inline=True, by=admin_client.user
    )
    assert not run.mlflow_synced
    settings.MLFLOW_TRACKING_URI = mlflow_store["uri"]
    changelist = reverse("admin:experiments_run_changelist")
    response = admin_client.post(changelist, {"action": "mirror_to_mlflow", "_selected_action": [run.pk]}, follow=True)
    assert "1 run(s) mirrored to MLflow." in response.content.decode()
    run.refresh_from_db()
    mlflow_run_id = run.mlflow_run_id
    assert run.mlflow_synced
    admin_client.post(changelist, {"action": "mirror_to_mlflow", "_selected_action": [run.pk]})
    run.refresh_from_db()
    assert run.mlflow_run_id == mlflow_run_id  # a mirrored run keeps its MLflow copy
