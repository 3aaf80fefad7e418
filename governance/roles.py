"""The roles: Django groups and exactly the permissions each holds.

Made by governance migration 0005 and brought up to date by later apps' migrations (serving 0002, 0004,
monitoring 0002, 0003); kept here so the migrations and anything that must restore them (tests that flush
the database) share one definition. The README's role table says the same, and tests/governance/test_roles.py
checks every operation on every surface against it. Services decide every permission; these groups only hold them.
"""

_READ_REGISTRY = [
    "registry.view_registeredmodel",
    "registry.view_modelversion",
    "registry.view_promotionrequest",
    "governance.view_policy",
    "governance.view_complianceevaluation",
    "experiments.view_experiment",
    "experiments.view_run",
    "experiments.view_datasetversion",
    "serving.view_deployment",
    # What monitoring found (drift, aggregates, jobs) is read by everyone who reads the registry.
    "monitoring.view_driftrun",
    "monitoring.view_driftresult",
    "monitoring.view_driftreference",
    "monitoring.view_hourlyaggregate",
    "monitoring.view_monitoringjob",
    # ... and the alerts it raised, their rules and e-mails, and the retrainings it started.
    "monitoring.view_alert",
    "monitoring.view_alertrule",
    "monitoring.view_alertnotification",
    "monitoring.view_retraining",
    "monitoring.view_retrainingpolicy",
]
_READ_CRM = [
    "serving.view_customer",
    "serving.view_segmentchange",
    "serving.view_crmrefresh",
    "serving.view_crmsettings",
]

ROLES = {
    "Data scientist": [
        *_READ_REGISTRY,
        "experiments.add_experiment",
        "experiments.change_experiment",
        "experiments.add_run",
        "experiments.add_datasetversion",
        "registry.add_registeredmodel",
        "registry.change_registeredmodel",
        "registry.add_modelversion",
        "registry.request_promotion",
    ],
    "Approver": [
        *_READ_REGISTRY,
        "registry.approve_promotion",
        "registry.emergency_rollback",
        "governance.add_policy",
        "governance.change_policy",
    ],
    "Auditor": [
        *_READ_REGISTRY,
        "governance.view_auditentry",
        "governance.view_webhooksubscription",
        "governance.view_webhookdelivery",
        "django_celery_beat.view_periodictask",
        *_READ_CRM,
    ],
    "ML engineer": [
        *_READ_REGISTRY,
        "experiments.stop_any_run",
        "governance.view_webhooksubscription",
        "governance.add_webhooksubscription",
        "governance.change_webhooksubscription",
        "governance.delete_webhooksubscription",
        "governance.view_webhookdelivery",
        "serving.add_deployment",
        "serving.change_deployment",
        "serving.predict_any_version",
        "serving.give_feedback",
        "serving.view_predictionlog",
        *_READ_CRM,
        "serving.update_segment",
        "serving.refresh_segments",
        "serving.change_crmsettings",
        # Alerts wake the ML engineer: they tune the rules, acknowledge and silence, and set retraining policies.
        "monitoring.acknowledge_alert",
        "monitoring.add_alertrule",
        "monitoring.change_alertrule",
        "monitoring.add_retrainingpolicy",
        "monitoring.change_retrainingpolicy",
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
    # The account an application's backend calls the prediction API with: it predicts (as any signed-in
    # user may), sends back the true labels, and asks for a customer's segment to be updated (the CRM).
    "Application": [
        "serving.give_feedback",
        "serving.update_segment",
    ],
}


def roles_sync(*, group_model=None, permission_model=None):
    """Create the role groups if missing and give each exactly its permissions (idempotent).

    A permission of an app not migrated yet is left out; that app's migration syncs again.
    """
    if group_model is None:
        from django.contrib.auth.models import Group as group_model
        from django.contrib.auth.models import Permission as permission_model
    for role, perms in ROLES.items():
        group, _ = group_model.objects.get_or_create(name=role)
        found = []
        for perm in perms:
            app_label, codename = perm.split(".")
            permission = permission_model.objects.filter(content_type__app_label=app_label, codename=codename).first()
            if permission is not None:
                found.append(permission)
        group.permissions.set(found)


def roles_sync_in_migration(apps, schema_editor):
    """RunPython body: create the permissions of the apps migrated so far (Django only does it after
    all migrations), then sync the roles with them."""
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    roles_sync(group_model=apps.get_model("auth", "Group"), permission_model=apps.get_model("auth", "Permission"))
