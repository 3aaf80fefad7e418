"""Shared fixtures: each test gets its own artifact store; MLflow is one SQLite store per session."""

import pytest


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    return {"uri": f"sqlite:///{root / 'mlflow.db'}", "artifacts": (root / "artifacts").as_uri()}


@pytest.fixture(autouse=True)
def isolated_stores(settings, tmp_path, mlflow_store):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.MLFLOW_TRACKING_URI = mlflow_store["uri"]
    settings.MLFLOW_ARTIFACT_LOCATION = mlflow_store["artifacts"]
    return settings


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("scientist", password="pw-scientist-1")


@pytest.fixture
def api_client(user):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(user)
    return client
