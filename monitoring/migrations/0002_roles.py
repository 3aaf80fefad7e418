"""Give the roles monitoring's read permissions (everyone who reads the registry reads what monitoring found)."""

from django.db import migrations

from governance.roles import roles_sync_in_migration


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0001_initial"), ("serving", "0006_merge_log_vector")]

    operations = [migrations.RunPython(roles_sync_in_migration, migrations.RunPython.noop)]
