"""The prediction log's days: partitions on PostgreSQL (made ahead, made on demand, dropped whole after the
retention), old rows deleted on SQLite; monitoring's aggregates outlive them."""

import datetime as dt

import pytest
from django.db import connection
from django.utils import timezone

from monitoring.models import HourlyAggregate
from monitoring.services import hours_compute
from monitoring.windows import hour_floor
from serving.models import PredictionLog
from serving.predlog import (
    prediction_log_partitions,
    prediction_log_partitions_ensure,
    prediction_log_retention_apply,
)
from serving.tasks import prediction_log_retention

pytestmark = pytest.mark.django_db
postgres_only = pytest.mark.skipif("connection.vendor != 'postgresql'", reason="partitions are PostgreSQL's")


@postgres_only
def test_the_log_is_partitioned_by_day_with_the_next_week_ready():
    today = timezone.now().astimezone(dt.UTC).date()
    partitions = prediction_log_partitions()
    assert today in partitions
    assert today + dt.timedelta(days=7) in partitions
    assert partitions[today] == f"serving_predictionlog_p{today:%Y%m%d}"


@postgres_only
def test_a_row_for_a_day_without_partition_gets_one(churn_version, churn_frame, log_writer):
    far = timezone.now() + dt.timedelta(days=40)
    assert far.date() not in prediction_log_partitions()

    log_writer.write(churn_frame.head(2), at=far)

    assert far.astimezone(dt.UTC).date() in prediction_log_partitions()
    assert PredictionLog.objects.filter(created_at=far).count() == 2


@postgres_only
def test_retention_drops_old_days_whole_and_keeps_the_aggregates(churn_reference, churn_frame, log_writer):
    today = timezone.now().astimezone(dt.UTC).date()
    old = timezone.now() - dt.timedelta(days=45)
    prediction_log_partitions_ensure(start=old.date(), end=old.date())
    log_writer.write(churn_frame.head(5), at=old)
    log_writer.write(churn_frame.head(5), at=timezone.now() - dt.timedelta(hours=1))
    hours_compute(model_name="churn", start=hour_floor(old), end=hour_floor(old) + dt.timedelta(hours=1))

    result = prediction_log_retention_apply(keep_days=30)

    assert f"serving_predictionlog_p{old.astimezone(dt.UTC).date():%Y%m%d}" in result.dropped
    assert result.cutoff == today - dt.timedelta(days=30)
    assert min(prediction_log_partitions()) >= result.cutoff
    assert PredictionLog.objects.count() == 5
    assert HourlyAggregate.objects.get(hour=hour_floor(old), deployment_mode="primary").rows == 5
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = 'serving_predictionlog'::regclass")
        assert cursor.fetchone()[0] == len(prediction_log_partitions())


def test_retention_deletes_old_rows_where_there_are_no_partitions(churn_version, churn_frame, log_writer, settings):
    if connection.vendor == "postgresql":
        pytest.skip("PostgreSQL drops partitions (above)")
    settings.PREDICTION_LOG_RETENTION_DAYS = 30
    log_writer.write(churn_frame.head(3), at=timezone.now() - dt.timedelta(days=31))
    log_writer.write(churn_frame.head(2), at=timezone.now())

    result = prediction_log_retention()

    assert result["deleted_rows"] == 3
    assert PredictionLog.objects.count() == 2
