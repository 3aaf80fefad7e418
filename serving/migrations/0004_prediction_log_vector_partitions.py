"""The prediction log at scale: a typed vector of the numeric features beside the JSON inputs and the
predicted class's position, indexes for late feedback and for errors, and on PostgreSQL the table partitioned by day on created_at (so retention drops a day
whole). SQLite keeps one ordinary table."""

import datetime as dt

from django.db import migrations, models

import serving.models

TABLE = "serving_predictionlog"
OLD = "serving_predictionlog_unpartitioned"


def partition_by_day(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexname NOT LIKE %s",
            [TABLE, "%pkey"],
        )
        indexes = cursor.fetchall()
        cursor.execute(f"ALTER TABLE {TABLE} RENAME TO {OLD}")
        cursor.execute(f"ALTER TABLE {OLD} RENAME CONSTRAINT {TABLE}_pkey TO {OLD}_pkey")
        for name, _ in indexes:
            cursor.execute(f'ALTER INDEX "{name}" RENAME TO "{name[:50]}_old"')
        cursor.execute(
            f"CREATE TABLE {TABLE} (LIKE {OLD} INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING CONSTRAINTS) "
            "PARTITION BY RANGE (created_at)"
        )
        # A partitioned table's unique keys must hold the partition key.
        cursor.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {TABLE}_pkey PRIMARY KEY (id, created_at)")
        for name, definition in indexes:  # same names, so later migrations find them
            cursor.execute(definition.replace(f" ON public.{OLD} ", f" ON public.{TABLE} "))
        cursor.execute(f"SELECT min(created_at), max(created_at) FROM {OLD}")
        first, last = cursor.fetchone()
        today = dt.datetime.now(dt.UTC).date()
        start = min(first.astimezone(dt.UTC).date(), today) if first else today
        end = max(last.astimezone(dt.UTC).date(), today) if last else today
        day = start - dt.timedelta(days=1)
        while day <= end + dt.timedelta(days=7):
            lower = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
            cursor.execute(
                f"CREATE TABLE {TABLE}_p{day:%Y%m%d} PARTITION OF {TABLE} FOR VALUES FROM (%s) TO (%s)",
                [lower, lower + dt.timedelta(days=1)],
            )
            day += dt.timedelta(days=1)
        cursor.execute(f"INSERT INTO {TABLE} SELECT * FROM {OLD}")
        cursor.execute(
            f"SELECT setval(pg_get_serial_sequence(%s, 'id'), coalesce((SELECT max(id) FROM {TABLE}), 0) + 1, false)",
            [TABLE],
        )
        cursor.execute(f"DROP TABLE {OLD}")


def unpartition(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexname NOT LIKE %s",
            [TABLE, "%pkey"],
        )
        indexes = cursor.fetchall()
        cursor.execute(f"ALTER TABLE {TABLE} RENAME TO {OLD}")
        for name, _ in indexes:
            cursor.execute(f'ALTER INDEX "{name}" RENAME TO "{name[:50]}_old"')
        cursor.execute(f"ALTER TABLE {OLD} DROP CONSTRAINT {TABLE}_pkey")
        cursor.execute(f"CREATE TABLE {TABLE} (LIKE {OLD} INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING CONSTRAINTS)")
        cursor.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {TABLE}_pkey PRIMARY KEY (id)")
        for name, definition in indexes:
            cursor.execute(definition.replace(f" ON ONLY public.{OLD} ", f" ON public.{TABLE} "))
        cursor.execute(f"INSERT INTO {TABLE} SELECT * FROM {OLD}")
        cursor.execute(
            f"SELECT setval(pg_get_serial_sequence(%s, 'id'), coalesce((SELECT max(id) FROM {TABLE}), 0) + 1, false)",
            [TABLE],
        )
        cursor.execute(f"DROP TABLE {OLD} CASCADE")


class Migration(migrations.Migration):
    dependencies = [("serving", "0003_deployments_for_current_stages")]

    operations = [
        migrations.AddField(
            model_name="predictionlog",
            name="features",
            field=serving.models.FloatVectorField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="predictionlog",
            name="predicted_index",
            field=models.SmallIntegerField(blank=True, editable=False, null=True),
        ),
        migrations.AddIndex(
            model_name="predictionlog",
            index=models.Index(
                condition=models.Q(("feedback_at__isnull", False)), fields=["feedback_at"], name="predlog_feedback_at"
            ),
        ),
        migrations.AddIndex(
            model_name="predictionlog",
            index=models.Index(condition=models.Q(("error", ""), _negated=True), fields=["created_at"], name="predlog_errors"),
        ),
        migrations.RunPython(partition_by_day, unpartition, elidable=False),
    ]
