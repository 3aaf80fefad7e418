"""Shared fixtures: a churn model (numeric and categorical features) registered with its drift reference, and
prediction-log rows written by the real writer at chosen times."""

import datetime as dt

import numpy as np
import pytest
from django.utils import timezone

from experiments import services as experiment_services
from experiments.services import dataset_frame_load
from monitoring.services import drift_reference_build
from registry import services as registry_services
from serving.predlog import LogRecord, PredictionLogWriter
from serving.runtime import version_load

CHURN_FEATURES = [
    "tenure_months",
    "monthly_charges",
    "total_charges",
    "support_calls",
    "num_products",
    "age",
    "paperless_billing",
    "contract_type",
    "internet_service",
    "payment_method",
]


@pytest.fixture(autouse=True)
def monitoring_settings(serving, settings):
    settings.SERVING_REQUIRE_AUTH = False
    settings.MONITORING_DRIFT_MIN_ROWS = 100
    return settings


@pytest.fixture
def churn_version(scientist):
    """churn v1: a logistic regression on 800 synthetic customers, registered (its reference not built yet)."""
    run = experiment_services.run_launch(
        experiment="monitoring-tests",
        dataset="customer_churn",
        n_samples=800,
        algorithm="logistic_regression",
        params={},
        inline=True,
        by=scientist,
    )
    return registry_services.model_version_register(run_id=run.pk, model_name="churn", by=scientist)


@pytest.fixture
def churn_reference(churn_version):
    return drift_reference_build(version=churn_version)


@pytest.fixture
def churn_frame(churn_version):
    return dataset_frame_load(version=churn_version.dataset)


class LogWriter:
    """Writes log rows for a version through serving's own writer, predicted by the version itself."""

    def __init__(self, version):
        self.version = version
        self.model = version_load(version)
        self.writer = PredictionLogWriter()
        self.count = 0

    def write(self, frame, *, at, mode="primary", latency_ms=1.0, per_request=1):
        """Log `frame`'s rows at time `at` (a datetime, or one per request), `per_request` rows a request."""
        records = []
        rows = frame.to_dict("records")
        for first in range(0, len(rows), per_request):
            batch = rows[first : first + per_request]
            columns = {name: [row[name] for row in batch] for name, _ in self.model.features}
            labels, probabilities = self.model.predict(columns)
            self.count += 1
            moment = at[first // per_request] if isinstance(at, list) else at
            latency = float(latency_ms[first // per_request] if isinstance(latency_ms, list) else latency_ms)
            records.append(
                LogRecord(
                    request_id=f"t{self.count}",
                    model_name=self.version.model.name,
                    version=self.version.version,
                    mode=mode,
                    created_at=moment,
                    latency_ms=latency,
                    columns=columns,
                    labels=labels,
                    probabilities=np.asarray(probabilities),
                    classes=self.model.classes,
                )
            )
        self.writer._write(records)
        return records

    def error(self, message, *, at, version=0, mode=""):
        self.count += 1
        record = LogRecord(f"e{self.count}", self.version.model.name, version, mode, at, 0.5, error=message)
        self.writer._write([record])


@pytest.fixture
def log_writer(churn_version):
    return LogWriter(churn_version)


def hours_ago(hours, *, minute=10):
    """A moment `hours` whole hours before the current hour, at `minute` past."""
    now = timezone.now().astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    return now - dt.timedelta(hours=hours) + dt.timedelta(minutes=minute)
