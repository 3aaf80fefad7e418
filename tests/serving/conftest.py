import pytest
from rest_framework.test import APIClient


@pytest.fixture(autouse=True)
def serving_settings(serving, settings):
    """The serving tests call the prediction APIs without a token unless they say otherwise."""
    settings.SERVING_REQUIRE_AUTH = False
    return settings


@pytest.fixture(autouse=True)
def metric_children_looked_up_anew(monkeypatch):
    """Each test starts as a new worker does, with no metric children looked up yet (serving.predict keeps
    them per model and version): what the first prediction of a process does is tested, not skipped."""
    from serving import predict

    monkeypatch.setattr(predict, "_success_metrics", {})


@pytest.fixture
def client():
    return APIClient()


IRIS_ROW = {"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2}
