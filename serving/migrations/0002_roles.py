"""Give the roles the serving permissions (the ML engineer manages deployments)."""

from django.db import migrations

from governance.roles import roles_sync_in_migration


class Migration(migrations.Migration):
    dependencies = [("serving", "0001_initial"), ("governance", "0005_roles")]

    operations = [migrations.RunPython(roles_sync_in_migration, migrations.RunPython.noop)]
