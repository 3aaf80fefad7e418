"""The MLflow registry follows ours: same versions, and `models:/NAME@production` is our Production version."""

import io

import joblib
import pytest
from mlflow import MlflowClient

from experiments.services import dataset_frame_load
from registry import services
from registry.models import RegisteredModel

pytestmark = [pytest.mark.django_db, pytest.mark.mlflow]


def test_aliases_follow_promotions_and_rollbacks(register, promote, approver, settings):
    import mlflow

    v1, v2 = register(), register()
    promote(v1)
    promote(v2, "staging")
    model = RegisteredModel.objects.get()
    assert model.mlflow_synced_at is None
    assert services.models_mirror_pending() == (1, 0)
    client = MlflowClient(settings.MLFLOW_TRACKING_URI, registry_uri=settings.MLFLOW_TRACKING_URI)
    remote = client.get_registered_model("iris-clf")
    assert remote.aliases == {"production": 1, "staging": 2}
    assert client.get_model_version("iris-clf", "2").tags["mlops_site.stage"] == "Staging"

    promote(v2)  # staging → production; v1 archived
    services.model_mirror_to_mlflow(model_id=model.pk)
    assert client.get_registered_model("iris-clf").aliases == {"production": 2}
    assert client.get_model_version("iris-clf", "1").tags["mlops_site.stage"] == "Archived"

    mlflow.set_tracking_uri(settings.MLFLOW_TRACKING_URI)
    mlflow.set_registry_uri(settings.MLFLOW_TRACKING_URI)
    loaded = mlflow.pyfunc.load_model("models:/iris-clf@production")
    v2.refresh_from_db()
    ours = joblib.load(io.BytesIO((settings.ARTIFACT_ROOT / v2.artifact_path).read_bytes()))
    frame = dataset_frame_load(version=v2.dataset).drop(columns=[v2.dataset.target])
    assert list(loaded.predict(frame)) == list(ours.predict(frame))

    services.production_rollback(model_name="iris-clf", by=approver, reason="r", emergency=True)
    services.model_mirror_to_mlflow(model_id=model.pk)
    assert client.get_registered_model("iris-clf").aliases == {"production": 1}


def test_mlflow_down_is_recorded_and_retried(register, settings):
    version = register(name="iris-mlflow-down")  # the MLflow store is shared by the session: a name of its own
    good_uri = settings.MLFLOW_TRACKING_URI
    settings.MLFLOW_TRACKING_URI = "http://127.0.0.1:9"
    assert services.models_mirror_pending() == (0, 1)
    model = RegisteredModel.objects.get()
    assert model.mlflow_sync_error
    assert model.mlflow_synced_at is None
    settings.MLFLOW_TRACKING_URI = good_uri
    assert services.models_mirror_pending() == (1, 0)
    version.refresh_from_db()
    assert version.mlflow_version == "1"
