"""Where the prediction log's vector and partitions (0004_prediction_log_vector_partitions) meet the CRM and
traffic-permission branch (0005)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("serving", "0004_prediction_log_vector_partitions"),
        ("serving", "0005_crm_and_traffic"),
    ]

    operations = []
