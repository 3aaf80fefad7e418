"""Regressions: each test failed before its fix (CSV reading, non-finite values, long names, sweep metric)."""

import math

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import IntegrityError
from mlflow import MlflowClient
from mlflow.entities import Metric as MlflowMetric

from core.errors import InvalidInput
from experiments import services, trainers
from experiments.models import DatasetVersion, Experiment, Run
from governance.models import AuditEntry

pytestmark = pytest.mark.django_db


def _upload(api_client, content, *, name="data", target="label"):
    return api_client.post(
        "/api/v1/datasets",
        {"name": name, "target": target, "file": SimpleUploadedFile(f"{name}.csv", content)},
        format="multipart",
    )


def _csv(rows, header="age,plan,label"):
    return (header + "\n" + "\n".join(rows) + "\n").encode()


# --- 1. training reads the CSV as the upload read it ------------------------------------------


def test_na_and_none_categories_and_spaces_after_commas_train_as_uploaded(launch, user):
    plans = ["NA", " None", "basic", " NA", "None", ""]
    rows = [f"{20 + i}, {plans[i % len(plans)]},{'yes' if i % 2 else 'no'}" for i in range(24)]
    version, _ = services.dataset_version_upload(name="plans", content=_csv(rows), target="label", by=user)

    run = launch(dataset="plans", params={"n_estimators": 5})

    assert run.status == Run.Status.FINISHED, run.error
    frame = services.dataset_frame_load(version=version)
    assert set(frame["plan"].dropna()) == {"NA", "None", "basic"}
    assert int(frame["plan"].isna().sum()) == 4  # only the empty cells
    assert frame["age"].tolist() == list(range(20, 44))


# --- 2. non-finite numbers are refused at upload ----------------------------------------------


@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity", "1e400"])
def test_a_non_finite_number_is_a_400_naming_the_column(api_client, value):
    rows = ["1,a", "2,b", f"{value},a", "4,b"]
    response = _upload(api_client, _csv(rows, header="width,label"))
    assert response.status_code == 400
    body = response.json()
    assert body["field"] == "file"
    assert f"column 'width' holds {value!r} at line 4" in body["error"]
    assert "finite" in body["error"]
    assert not DatasetVersion.objects.exists()


def test_huge_finite_numbers_upload_with_their_overflowing_mean_left_out(api_client):
    response = _upload(api_client, _csv(["1e308,a", "1e308,b", "1e308,a"], header="width,label"))
    assert response.status_code == 201
    width = DatasetVersion.objects.get().schema["columns"][0]
    assert (float(width["max"]), width["mean"]) == (1e308, None)  # PostgreSQL's jsonb gives 1e308 back as an int


def test_a_constraint_the_new_dataset_row_breaks_is_not_taken_for_a_concurrent_upload(monkeypatch, user):
    def broken_create(**kwargs):
        raise IntegrityError("CHECK constraint failed: JSON_VALID(schema)")

    monkeypatch.setattr(DatasetVersion.objects, "create", broken_create)
    with pytest.raises(IntegrityError, match="JSON_VALID"):
        services.dataset_version_upload(name="x", content=_csv(["1,a,x", "2,b,y"]), target="label", by=user)


# --- 3. an MLflow run with a NaN metric imports -----------------------------------------------


def test_import_of_an_mlflow_run_with_a_nan_metric(tmp_path, api_client, user):
    uri = f"sqlite:///{tmp_path / 'nan.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("diverged", artifact_location=(tmp_path / "a").as_uri())
    remote = client.create_run(experiment_id, run_name="exploded")
    client.log_batch(
        remote.info.run_id,
        metrics=[
            MlflowMetric("loss", 0.5, 0, 0),
            MlflowMetric("loss", math.nan, 0, 1),
            MlflowMetric("accuracy", math.nan, 0, 0),
            MlflowMetric("accuracy", 0.75, 0, 1),
        ],
    )
    client.set_terminated(remote.info.run_id)

    assert services.mlflow_import(tracking_uri=uri, by=user) == {"experiments": 1, "runs": 1, "skipped": 0}

    run = Run.objects.get(mlflow_run_id=remote.info.run_id)
    assert run.latest_metrics == {"loss": None, "accuracy": 0.75}
    assert list(run.metrics.order_by("key", "step").values_list("key", "step", "value")) == [
        ("accuracy", 1, 0.75),
        ("loss", 0, 0.5),
    ]
    assert AuditEntry.objects.get(action="run.imported").after["metric_points_skipped"] == 2
    detail = api_client.get(f"/api/v1/runs/{run.pk}")
    assert detail.status_code == 200
    assert detail.json()["metrics"] == {"loss": None, "accuracy": 0.75}
    history = api_client.get(f"/api/v1/runs/{run.pk}/metrics/loss")
    assert [point["value"] for point in history.json()["history"]] == [0.5]


# --- 4. names near 200 characters -------------------------------------------------------------


def test_a_default_run_name_and_sweep_member_names_fit_and_stay_distinct(queue, user):
    long_name = "d" * 200
    services.dataset_version_upload(name=long_name, content=_csv(["1,a,x", "2,b,y", "3,a,x"]), target="label", by=user)

    parent = queue(dataset=long_name, sweep={"max_depth": [2, 3]})

    assert parent.name == "random_forest-" + "d" * 185 + "…"
    assert sorted(parent.children.values_list("name", flat=True)) == [
        "random_forest-" + "d" * 171 + "… [max_depth=2]",
        "random_forest-" + "d" * 171 + "… [max_depth=3]",
    ]


def test_a_given_run_name_of_200_characters_keeps_its_sweep_suffix_and_longer_is_refused(queue):
    parent = queue(name="n" * 200, sweep={"max_depth": [2, 3]})
    assert parent.name == "n" * 200
    assert sorted(parent.children.values_list("name", flat=True)) == [
        "n" * 185 + "… [max_depth=2]",
        "n" * 185 + "… [max_depth=3]",
    ]
    with pytest.raises(InvalidInput) as error:
        queue(name="n" * 201)
    assert error.value.field == "name"


def test_an_imported_run_name_longer_than_200_characters_is_shortened(tmp_path, user):
    uri = f"sqlite:///{tmp_path / 'long.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("long-names", artifact_location=(tmp_path / "a").as_uri())
    remote = client.create_run(experiment_id, run_name="r" * 250)
    client.set_terminated(remote.info.run_id)

    services.mlflow_import(tracking_uri=uri, by=user)

    assert Run.objects.get(mlflow_run_id=remote.info.run_id).name == "r" * 199 + "…"


# --- 5. roc_auc is only a sweep metric for a binary target ------------------------------------


def test_a_roc_auc_sweep_on_a_multiclass_dataset_is_refused_at_launch(launch, queue):
    with pytest.raises(InvalidInput) as error:
        launch(dataset="iris", sweep={"max_depth": [2, 3]}, sweep_metric="roc_auc")
    assert error.value.field == "sweep_metric"
    assert error.value.message.startswith("roc_auc is recorded for binary targets only; dataset iris@")
    assert error.value.message.endswith(" has 3 classes")
    assert not Run.objects.exists()
    assert not Experiment.objects.exists()

    binary = queue(dataset="breast_cancer", sweep={"max_depth": [2, 3]}, sweep_metric="roc_auc")
    assert binary.sweep_metric == "roc_auc"


# --- 6. random_state within what scikit-learn takes -------------------------------------------


def test_random_state_above_2_to_the_32_is_refused_and_the_largest_allowed_trains(launch):
    for kwargs, field in [
        ({"params": {"random_state": 2**32}}, "params.random_state"),
        ({"sweep": {"random_state": [1, str(2**40)]}}, "sweep.random_state"),
    ]:
        with pytest.raises(InvalidInput) as error:
            launch(**kwargs)
        assert error.value.field == field
        assert f"<= {2**32 - 1}" in error.value.message
    assert not Run.objects.exists()

    assert trainers.params_validate("random_forest", {"random_state": str(2**32 - 1)})["random_state"] == 2**32 - 1
    run = launch(params={"n_estimators": 5, "random_state": 2**32 - 1})
    assert run.status == Run.Status.FINISHED, run.error


# --- 7. the line number of text in a numeric column -------------------------------------------


@pytest.mark.parametrize(
    ("content", "line"),
    [
        (b"age,label\n1,x\n\n2,y\n3,x\n\n\n4,y\nabc,x\n", 9),
        (b"\n\nage,label\n1,x\n2,y\n3,x\n4,y\nabc,x\n", 8),
        (b"age,label\n1,x\n   \n2,y\n3,x\n4,y\nabc,x\n", 7),
        (b'age,note,label\n1,"two\nlines",x\n2,a,y\n3,a,x\n\n4,a,y\nabc,a,x\n', 8),
        (b"age,label\r\n1,x\r\n\r\n2,y\r\n3,x\r\n4,y\r\nabc,x\r\n", 7),
        (b"age,label\r1,x\r\r2,y\r3,x\r4,y\rabc,x\r", 7),
    ],
    ids=["blank-lines", "blank-lines-before-header", "whitespace-line", "quoted-newline", "crlf", "cr"],
)
def test_text_in_a_numeric_column_is_reported_at_its_line_in_the_file(user, content, line):
    with pytest.raises(InvalidInput) as error:
        services.dataset_version_upload(name="bad", content=content, target="label", by=user)
    assert error.value.field == "file"
    assert f"column 'age' is numeric but line {line} holds 'abc'" in error.value.message
