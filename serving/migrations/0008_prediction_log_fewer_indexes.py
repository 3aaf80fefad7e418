"""The prediction log pays every index on each row it writes: the request id keeps a plain index (feedback
looks rows up by the exact id) without the LIKE index a CharField's db_index adds on PostgreSQL, and
model_name's own two indexes go (the (model_name, version, created_at) index serves lookups by model).
Seven btree indexes a row become four."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("serving", "0007_last_served")]

    operations = [
        # The new index first, so request ids are never without one.
        migrations.AddIndex(
            model_name="predictionlog",
            index=models.Index(fields=["request_id"], name="predlog_request_id"),
        ),
        migrations.AlterField(model_name="predictionlog", name="request_id", field=models.CharField(max_length=64)),
        migrations.AlterField(model_name="predictionlog", name="model_name", field=models.CharField(max_length=100)),
    ]
