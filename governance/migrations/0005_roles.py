"""The four roles as Django groups with their permissions.

Permissions are normally created after all migrations run (post_migrate); this migration
creates the ones it needs first, so it works on a fresh database as on an existing one.
Later issues add the permissions of their own models to these groups in their migrations.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

_VIEW_REGISTRY = [
    "registry.view_registeredmodel",
    "registry.view_modelversion",
    "registry.view_promotionrequest",
    "governance.view_policy",
    "governance.view_complianceevaluation",
]

ROLES = {
    "Data scientist": [
        *_VIEW_REGISTRY,
        "experiments.view_experiment",
        "experiments.add_experiment",
        "experiments.change_experiment",
        "experiments.view_run",
        "experiments.add_run",
        "experiments.view_datasetversion",
        "experiments.add_datasetversion",
        "registry.add_registeredmodel",
        "registry.change_registeredmodel",
        "registry.add_modelversion",
        "registry.request_promotion",
    ],
    "Approver": [
        *_VIEW_REGISTRY,
        "experiments.view_experiment",
        "experiments.view_run",
        "experiments.view_datasetversion",
        "registry.approve_promotion",
        "registry.emergency_rollback",
        "governance.add_policy",
        "governance.change_policy",
    ],
    "Auditor": [
        *_VIEW_REGISTRY,
        "governance.view_auditentry",
        "governance.view_webhookdelivery",
        "experiments.view_experiment",
        "experiments.view_run",
        "experiments.view_datasetversion",
    ],
    "ML engineer": [
        *_VIEW_REGISTRY,
        "experiments.view_experiment",
        "experiments.view_run",
        "experiments.view_datasetversion",
        "governance.view_webhooksubscription",
        "governance.add_webhooksubscription",
        "governance.change_webhooksubscription",
        "governance.delete_webhooksubscription",
        "governance.view_webhookdelivery",
        "django_celery_beat.view_periodictask",
        "django_celery_beat.add_periodictask",
        "django_celery_beat.change_periodictask",
        "django_celery_beat.delete_periodictask",
        "django_celery_beat.view_intervalschedule",
        "django_celery_beat.add_intervalschedule",
        "django_celery_beat.change_intervalschedule",
        "django_celery_beat.view_crontabschedule",
        "django_celery_beat.add_crontabschedule",
        "django_celery_beat.change_crontabschedule",
    ],
}


def create_roles(apps, schema_editor):
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, perms in ROLES.items():
        group, _ = Group.objects.get_or_create(name=role)
        for perm in perms:
            app_label, codename = perm.split(".")
            group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))


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

    operations = [migrations.RunPython(create_roles, remove_roles)]
