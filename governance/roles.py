"""The roles: Django groups and the permissions each holds. Made by governance migration 0005 and
completed by later apps' migrations (serving 0002); kept here so the migrations and anything that
must restore them (tests that flush the database) share one definition."""

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
        "serving.view_deployment",
        "serving.add_deployment",
        "serving.change_deployment",
        "serving.view_predictionlog",
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


def roles_sync(*, group_model=None, permission_model=None):
    """Create the role groups if missing and give each its permissions (idempotent)."""
    if group_model is None:
        from django.contrib.auth.models import Group as group_model
        from django.contrib.auth.models import Permission as permission_model
    for role, perms in ROLES.items():
        group, _ = group_model.objects.get_or_create(name=role)
        for perm in perms:
            app_label, codename = perm.split(".")
            # A permission of an app not migrated yet is skipped; that app's migration syncs again.
            found = permission_model.objects.filter(content_type__app_label=app_label, codename=codename).first()
            if found is not None:
                group.permissions.add(found)


def roles_sync_in_migration(apps, schema_editor):
    """RunPython body: create the permissions of the apps migrated so far (Django only does it after
    all migrations), then sync the roles with them."""
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    roles_sync(group_model=apps.get_model("auth", "Group"), permission_model=apps.get_model("auth", "Permission"))
