"""/metrics shows what the monitoring jobs computed (accuracy, drift), read from the database at each scrape:
the same numbers from every process, once, next to the prediction metrics, in multiprocess mode too."""

import datetime as dt

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from monitoring.models import DriftResult, DriftRun, HourlyAggregate

pytestmark = pytest.mark.django_db


def _samples(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def _gauge(samples, name, **labels):
    matches = [value for (n, key), value in samples.items() if n == name and set(labels.items()) <= set(key)]
    assert len(matches) == 1, (name, labels, matches)
    return matches[0]


@pytest.fixture
def computed(register):
    """iris-clf v1 (validation accuracy in its metrics), two hours of aggregates and a drift run with drift."""
    version = register()
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    for hours_ago, (labelled, correct, expected, rows) in enumerate([(40, 30, 80.0, 100), (60, 42, 70.0, 100)]):
        HourlyAggregate.objects.create(
            model_name="iris-clf",
            version=1,
            deployment_mode="primary",
            hour=now - dt.timedelta(hours=hours_ago + 1),
            requests=rows,
            rows=rows,
            labelled=labelled,
            correct=correct,
            expected_correct=expected,
            class_counts={"setosa": rows},
        )
    # An hour outside the 24 h window does not count.
    HourlyAggregate.objects.create(
        model_name="iris-clf",
        version=1,
        deployment_mode="primary",
        hour=now - dt.timedelta(days=3),
        requests=10,
        rows=10,
        labelled=10,
        correct=0,
    )
    old = DriftRun.objects.create(
        model_name="iris-clf",
        version=1,
        window="24h",
        window_start=now - dt.timedelta(days=2),
        window_end=now - dt.timedelta(days=1),
        status=DriftRun.Status.OK,
        dataset_drift=False,
        share_drifted=0.0,
    )
    DriftResult.objects.create(
        run=old, name="petal length (cm)", method="ks", score=0.9, threshold=0.05, drifted=False, verdict=True
    )
    run = DriftRun.objects.create(
        model_name="iris-clf",
        version=1,
        window="24h",
        window_start=now - dt.timedelta(days=1),
        window_end=now,
        status=DriftRun.Status.OK,
        dataset_drift=True,
        share_drifted=0.5,
        n_drifted=2,
        n_columns=4,
    )
    DriftResult.objects.create(
        run=run, name="petal length (cm)", method="ks", score=0.001, threshold=0.05, drifted=True, verdict=True
    )
    # An effect size (not the deciding test) is not a gauge of its own.
    DriftResult.objects.create(
        run=run, name="petal length (cm)", method="wasserstein", score=0.4, threshold=0.1, drifted=True, verdict=False
    )
    DriftRun.objects.create(  # a later run without enough data does not hide the last verdict
        model_name="iris-clf",
        version=1,
        window="24h",
        window_start=now - dt.timedelta(days=1),
        window_end=now,
        status=DriftRun.Status.NOT_ENOUGH_DATA,
    )
    return version


def test_metrics_show_accuracy_and_drift_from_the_database(client, computed):
    samples = _samples(client)
    v1 = {"model": "iris-clf", "model_version": "1"}
    assert _gauge(samples, "mlops_labelled_rows", **v1) == 100
    assert _gauge(samples, "mlops_monitored_rows", **v1) == 200
    assert _gauge(samples, "mlops_live_accuracy", **v1) == pytest.approx(72 / 100)
    assert _gauge(samples, "mlops_estimated_accuracy", **v1) == pytest.approx(150 / 200)
    assert _gauge(samples, "mlops_validation_accuracy", **v1) == pytest.approx(computed.metrics["accuracy"])
    run = {**v1, "window": "24h", "kind": "exact"}
    assert _gauge(samples, "mlops_dataset_drift", **run) == 1
    assert _gauge(samples, "mlops_drift_share", **run) == 0.5
    column = {**run, "feature": "petal length (cm)", "method": "ks", "role": "feature"}
    assert _gauge(samples, "mlops_drift_score", **column) == 0.001
    assert _gauge(samples, "mlops_drift_threshold", **column) == 0.05
    assert _gauge(samples, "mlops_feature_drifted", **column) == 1
    assert not [key for name, key in samples if name == "mlops_drift_score" and ("method", "wasserstein") in key]
    assert _gauge(samples, "mlops_monitoring_collector_up") == 1


def test_multiprocess_mode_adds_the_gauges_once(client, computed, tmp_path, monkeypatch):
    from prometheus_client import values

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    values.ValueClass = values.get_value_class()  # a counter made now writes to the directory's files
    try:
        from prometheus_client import CollectorRegistry, Counter

        Counter("prediction_requests", "x", ["model"], registry=CollectorRegistry()).labels("iris-clf").inc(3)
    finally:
        monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
        values.ValueClass = values.get_value_class()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    samples = _samples(client)
    assert _gauge(samples, "prediction_requests_total", model="iris-clf") == 3  # from the files
    assert _gauge(samples, "mlops_live_accuracy", model="iris-clf", model_version="1") == pytest.approx(0.72)


def test_a_database_error_leaves_the_other_metrics_standing(client, computed, monkeypatch):
    from monitoring import metrics

    def broken(**kwargs):
        raise RuntimeError("database down")

    monkeypatch.setattr(metrics, "quality_by_version", broken)
    samples = _samples(client)
    assert _gauge(samples, "mlops_monitoring_collector_up") == 0
    assert any(name.startswith("django_http") for name, _ in samples)
