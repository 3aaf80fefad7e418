"""manage.py train and import_mlflow, as a data scientist types them."""

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from mlflow import MlflowClient

from experiments.models import Run
from tests.helpers import run_dispatches

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def acting_user(user, monkeypatch):
    """The commands act as the data scientist named by MLOPS_USER, as the README sets it."""
    monkeypatch.setenv("MLOPS_USER", user.username)
    return user


def _train(*args):
    out, err = StringIO(), StringIO()
    call_command("train", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_train_prints_the_metrics_and_the_run_id_last(settings):
    out, err = _train(
        "--experiment",
        "cli",
        "--dataset",
        "iris",
        "--algorithm",
        "random_forest",
        "--param",
        "n_estimators=12",
        "--param",
        "max_depth=5",
    )
    run = Run.objects.get()
    assert out.strip().splitlines()[-1] == str(run.pk)
    assert run.status == Run.Status.FINISHED
    assert f"Run {run.pk} FINISHED" in out
    assert "accuracy" in out
    assert "100%" in err  # the progress bar
    assert dict(run.params.values_list("key", "value"))["max_depth"] == "5"


def test_seed_style_logistic_regression_options():
    out, _ = _train(
        "--experiment",
        "cli",
        "--dataset",
        "customer_churn",
        "--algorithm",
        "logistic_regression",
        "--n_samples",
        "1000",
        "--c_param",
        "0.1",
    )
    run = Run.objects.get()
    assert run.status == Run.Status.FINISHED
    assert run.params.get(key="C").value == "0.1"
    assert run.dataset.n_rows == 1000


def test_sweep_from_the_cli():
    out, _ = _train(
        "--experiment",
        "cli",
        "--dataset",
        "iris",
        "--algorithm",
        "random_forest",
        "--sweep",
        "n_estimators=5,10;max_depth=2,3",
    )
    parent = Run.objects.get(parent__isnull=True)
    assert parent.children.count() == 4
    assert out.strip().splitlines()[-1] == str(parent.pk)
    assert "*best*" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "nope", "--algorithm", "random_forest"], "dataset: unknown dataset 'nope'"),
        (
            ["--dataset", "iris", "--algorithm", "random_forest", "--param", "n_estimators=x"],
            "params.n_estimators: must be an integer",
        ),
        (
            ["--dataset", "iris", "--algorithm", "random_forest", "--param", "depth=3"],
            "params.depth: unknown parameter",
        ),
        (["--dataset", "iris", "--algorithm", "random_forest", "--sweep", "max_depth"], "sweep:"),
        (
            ["--dataset", "iris", "--algorithm", "logistic_regression", "--c_param", "0.1", "--param", "C=1"],
            "give C once",
        ),
    ],
)
def test_bad_input_is_a_command_error_and_creates_nothing(args, message):
    with pytest.raises(CommandError, match=message):
        _train("--experiment", "cli", *args)
    assert not Run.objects.exists()


def test_bad_input_exits_non_zero_from_the_shell(monkeypatch):
    import subprocess
    import sys

    monkeypatch.delenv("MLOPS_USER")
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "train",
            "--experiment",
            "cli",
            "--dataset",
            "iris",
            "--algorithm",
            "random_forest",
            "--param",
            "n_estimators=oops",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "say who you are with --user" in result.stderr


def test_a_user_without_the_role_is_refused_and_nothing_is_created(django_user_model, monkeypatch):
    django_user_model.objects.create_user("nobody", password="pw-nobody-1")
    monkeypatch.setenv("MLOPS_USER", "nobody")
    with pytest.raises(CommandError, match="nobody may not launch training runs: it needs the add_run permission"):
        _train("--experiment", "cli", "--dataset", "iris", "--algorithm", "random_forest")
    assert not Run.objects.exists()


def test_a_failed_run_exits_non_zero_with_its_id_printed():
    from core.storage import artifact_path
    from experiments.services import dataset_version_builtin

    version, _ = dataset_version_builtin(name="wine")
    artifact_path(version.path).write_bytes(b"not the data")
    out = StringIO()
    with pytest.raises(CommandError, match="failed"):
        call_command(
            "train",
            "--experiment",
            "cli",
            "--dataset",
            "wine",
            "--algorithm",
            "random_forest",
            stdout=out,
            stderr=StringIO(),
        )
    assert out.getvalue().strip().splitlines()[-1] == str(Run.objects.get().pk)


def test_queue_hands_the_run_to_the_workers(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        out, _ = _train("--experiment", "cli", "--dataset", "iris", "--algorithm", "random_forest", "--queue")
    run = Run.objects.get()
    assert run.status == Run.Status.QUEUED
    assert out.strip().splitlines()[-1] == str(run.pk)
    assert len(run_dispatches(callbacks)) == 1


def test_import_mlflow_command(tmp_path):
    uri = f"sqlite:///{tmp_path / 'other.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("legacy", artifact_location=(tmp_path / "a").as_uri())
    client.set_terminated(client.create_run(experiment_id, run_name="old").info.run_id)
    out = StringIO()
    call_command("import_mlflow", "--tracking-uri", uri, stdout=out, stderr=StringIO())
    assert "Imported 1 runs and 1 new experiments" in out.getvalue()
    out = StringIO()
    call_command("import_mlflow", "--tracking-uri", uri, stdout=out, stderr=StringIO())
    assert "Imported 0 runs and 0 new experiments" in out.getvalue()
    assert "1 runs were already here" in out.getvalue()


@pytest.mark.parametrize("scheme", ["sqlite:///", "file://", ""])
def test_import_mlflow_from_a_store_that_does_not_exist_is_an_error_and_creates_nothing(tmp_path, scheme):
    missing = tmp_path / "path" / "to" / "other" / "mlflow.db"
    with pytest.raises(CommandError, match=f"no .* at {missing}"):
        call_command("import_mlflow", "--tracking-uri", f"{scheme}{missing}", stdout=StringIO(), stderr=StringIO())
    assert not (tmp_path / "path").exists()
    relative = "path/to/other/mlflow.db"  # the README's line, run in the checkout
    with pytest.raises(CommandError, match=f"no SQLite database at {relative}"):
        call_command("import_mlflow", "--tracking-uri", f"sqlite:///{relative}", stdout=StringIO(), stderr=StringIO())
    assert not Path(relative).exists()


def test_import_mlflow_from_an_unreachable_store_is_a_clear_error():
    with pytest.raises(CommandError, match="cannot read the MLflow store at http://127.0.0.1:9"):
        call_command("import_mlflow", "--tracking-uri", "http://127.0.0.1:9", stdout=StringIO(), stderr=StringIO())


def test_mlflows_pickle_warning_does_not_reach_the_progress_bar():
    import logging

    from experiments.services import mlflow_sync  # noqa: F401  (installs the filter)

    logger = logging.getLogger("mlflow.sklearn")

    def record(message):
        return logger.makeRecord(logger.name, logging.WARNING, __file__, 1, message, None, None)

    assert not logger.filter(record("Saving scikit-learn models in the pickle or cloudpickle format requires care"))
    assert logger.filter(record("any other warning"))


def test_the_filesystem_broker_url_names_a_host_so_kombu_does_not_warn():
    from django.conf import settings
    from kombu import Connection

    if not settings.CELERY_BROKER_URL.startswith("filesystem:"):
        pytest.skip("the broker is configured (CELERY_BROKER_URL)")
    assert Connection(settings.CELERY_BROKER_URL).hostname == "localhost"
