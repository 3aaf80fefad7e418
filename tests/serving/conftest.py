import pytest
from rest_framework.test import APIClient

from serving.runtime import ServingRuntime


@pytest.fixture(autouse=True)
def serving_settings(settings, tmp_path, monkeypatch):
    settings.PREDICTION_LOG_SYNC = True
    settings.SERVING_REQUIRE_AUTH = False
    settings.SERVING_SIGNAL_FILE = str(tmp_path / "serving-generation")
    # A fresh in-memory runtime per test, as a freshly started worker process has.
    fresh = ServingRuntime()
    monkeypatch.setattr("serving.runtime.runtime", fresh)
    monkeypatch.setattr("serving.predict.runtime", fresh)
    monkeypatch.setattr("serving.api.runtime", fresh)
    monkeypatch.setattr("serving.v2.runtime", fresh)
    return settings


@pytest.fixture
def production(register, promote, django_capture_on_commit_callbacks):
    """iris-clf v1 in Production (its deployment made by the promotion), the change signal sent."""
    with django_capture_on_commit_callbacks(execute=True):
        version = register()
        promote(version)
    return version


@pytest.fixture
def client():
    return APIClient()


IRIS_ROW = {"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2}
