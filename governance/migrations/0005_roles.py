"""The four roles as Django groups with their permissions.

Permissions are normally created after all migrations run (post_migrate); this migration
creates the ones it needs first, so it works on a fresh database as on an existing one.
Later issues add the permissions of their own models to these groups in their migrations.
"""

from django.db import migrations

from governance.roles import ROLES, roles_sync_in_migration


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=list(ROLES)).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("governance", "0004_complianceevaluation_version_policy_model_and_more"),
        ("registry", "0001_initial"),
        ("experiments", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(roles_sync_in_migration, remove_roles)]
