"""The prediction log's days: partitions on PostgreSQL (made ahead, made on demand, dropped whole after the
retention), old rows deleted on SQLite; monitoring's aggregates outlive them."""

import datetime as dt

import pytest
from django.db import DatabaseError, connection
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


def _bounds(name):
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = %s", [name])
        return cursor.fetchone()[0]


@postgres_only
def test_partitions_are_made_one_day_each_for_the_days_asked(settings):
    start = timezone.now().astimezone(dt.UTC).date() + dt.timedelta(days=60)
    days = [start + dt.timedelta(days=n) for n in range(3)]

    created = prediction_log_partitions_ensure(start=days[0], end=days[-1])

    assert created == [f"serving_predictionlog_p{day:%Y%m%d}" for day in days]
    assert _bounds(created[0]) == (f"FOR VALUES FROM ('{days[0]} 00:00:00+00') TO ('{days[1]} 00:00:00+00')")
    assert prediction_log_partitions_ensure(start=days[0], end=days[-1]) == []  # made once


@postgres_only
def test_a_partition_someone_else_made_is_not_taken_for_a_day():
    """A DBA's own partition of the log (an archive, say) is listed by none of our days, and hides none."""
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE serving_predictionlog_archive PARTITION OF serving_predictionlog "
            "FOR VALUES FROM ('2001-01-01') TO ('2002-01-01')"
        )
    partitions = prediction_log_partitions()
    assert "serving_predictionlog_archive" not in partitions.values()
    assert timezone.now().astimezone(dt.UTC).date() in partitions  # the names after it are still read
    # A day it covers cannot have a partition of ours: said, not taken for made.
    with pytest.raises(DatabaseError):
        prediction_log_partitions_ensure(start=dt.date(2001, 6, 1), end=dt.date(2001, 6, 1))


@postgres_only
def test_retention_keeps_the_cutoff_day_and_makes_the_days_ahead_that_are_missing(settings, caplog):
    import logging

    settings.PREDICTION_LOG_RETENTION_DAYS = 30
    today = timezone.now().astimezone(dt.UTC).date()
    cutoff = today - dt.timedelta(days=30)
    prediction_log_partitions_ensure(start=cutoff - dt.timedelta(days=1), end=cutoff)
    ahead = today + dt.timedelta(days=7)
    yesterday = today - dt.timedelta(days=1)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE serving_predictionlog_p{ahead:%Y%m%d}")
        cursor.execute(f"DROP TABLE IF EXISTS serving_predictionlog_p{yesterday:%Y%m%d}")
    caplog.set_level(logging.INFO, logger="serving.predlog")

    result = prediction_log_retention_apply()  # keep_days from the settings, today the UTC date

    assert result.cutoff == cutoff
    assert result.dropped == (f"serving_predictionlog_p{cutoff - dt.timedelta(days=1):%Y%m%d}",)
    assert result.created == (f"serving_predictionlog_p{yesterday:%Y%m%d}", f"serving_predictionlog_p{ahead:%Y%m%d}")
    assert result.deleted_rows == 0
    partitions = prediction_log_partitions()
    assert min(partitions) == cutoff
    assert max(partitions) == ahead
    assert f"prediction log: dropped 1 day partition(s) before {cutoff}" in [r.getMessage() for r in caplog.records]
    # An explicit keep_days wins over the setting.
    assert prediction_log_retention_apply(keep_days=10).cutoff == today - dt.timedelta(days=10)


def _zone_on_another_date():
    """A time zone whose date, now, is not the UTC date (behind UTC in the UTC morning, ahead after)."""
    return "Etc/GMT+12" if timezone.now().astimezone(dt.UTC).hour < 12 else "Etc/GMT-14"


def test_retention_counts_days_in_utc_whatever_the_time_zone(churn_version, churn_frame, log_writer, settings):
    """The cutoff is a UTC day, as the partitions are, also where TIME_ZONE is far from UTC: a row of the
    cutoff day's first hour (UTC) is kept, one of the hour before is deleted."""
    settings.TIME_ZONE = _zone_on_another_date()
    today = timezone.now().astimezone(dt.UTC).date()
    cutoff = today - dt.timedelta(days=30)
    midnight = dt.datetime.combine(cutoff, dt.time(), tzinfo=dt.UTC)
    if connection.vendor == "postgresql":
        prediction_log_partitions_ensure(start=cutoff - dt.timedelta(days=1), end=cutoff)
    log_writer.write(churn_frame.head(2), at=midnight - dt.timedelta(minutes=30))
    log_writer.write(churn_frame.head(3), at=midnight + dt.timedelta(minutes=30))

    result = prediction_log_retention_apply(keep_days=30)

    assert result.cutoff == cutoff
    assert PredictionLog.objects.count() == 3
    if connection.vendor != "postgresql":
        assert (result.created, result.dropped, result.deleted_rows) == ((), (), 2)
