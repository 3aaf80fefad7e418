"""Where the CRM (0004_crm) and the traffic permissions (0004_traffic_permissions) meet: the roles get the
CRM's permissions too (ML engineers run it, auditors read it, the Application account updates segments)."""

from django.db import migrations

from governance.roles import roles_sync_in_migration


class Migration(migrations.Migration):
    dependencies = [
        ("serving", "0004_crm"),
        ("serving", "0004_traffic_permissions"),
    ]

    operations = [migrations.RunPython(roles_sync_in_migration, migrations.RunPython.noop)]
