"""The prediction log writer as the serving processes run it: queued records written in batches."""

import numpy as np
import pytest
from django.db import connection
from django.utils import timezone

from serving.models import PredictionLog
from serving.predlog import LogRecord, PredictionLogWriter

pytestmark = pytest.mark.django_db(transaction=True)


def _record(index, rows=1):
    return LogRecord(
        request_id=f"req-{index}",
        model_name="iris-clf",
        version=1,
        mode="primary",
        created_at=timezone.now(),
        latency_ms=0.4,
        columns={"petal_length_cm": [1.4 + i for i in range(rows)], "petal_width_cm": [0.2] * rows},
        labels=["setosa"] * rows,
        probabilities=np.array([[0.9, 0.1]] * rows, dtype=np.float32),
        classes=["setosa", "versicolor"],
    )


@pytest.fixture
def writer(settings):
    settings.PREDICTION_LOG_SYNC = False
    return PredictionLogWriter()


def test_queued_records_are_written_in_multi_row_statements(writer):
    for index in range(600):  # more rows than one statement takes
        writer._queue.put(_record(index, rows=2))
    writer._queue.put(LogRecord("req-bad", "iris-clf", 1, "primary", timezone.now(), 0.1, error="missing feature"))

    writer.flush()

    assert PredictionLog.objects.count() == 1201
    row = PredictionLog.objects.get(request_id="req-7", row=1)
    assert row.inputs == {"petal_length_cm": pytest.approx(2.4), "petal_width_cm": 0.2}
    assert row.prediction == "setosa"
    assert row.probabilities == {"setosa": pytest.approx(0.9), "versicolor": pytest.approx(0.1)}
    assert row.confidence == pytest.approx(0.9)
    assert PredictionLog.objects.get(request_id="req-bad").error == "missing feature"


def test_a_dropped_connection_is_reopened_and_the_batch_kept(writer):
    writer._queue.put(_record(1))
    writer.flush()
    connection.connection.close()  # the database went away under the open connection

    writer._queue.put(_record(2))
    writer.flush()

    assert set(PredictionLog.objects.values_list("request_id", flat=True)) == {"req-1", "req-2"}
