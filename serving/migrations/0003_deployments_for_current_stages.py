"""Versions already in Production or Staging when serving was installed get their primary deployment."""

from django.db import migrations


def deploy_current_stages(apps, schema_editor):
    ModelVersion = apps.get_model("registry", "ModelVersion")
    Deployment = apps.get_model("serving", "Deployment")
    environments = {"Production": "production", "Staging": "staging"}
    for version in ModelVersion.objects.filter(stage__in=list(environments)).select_related("model"):
        environment = environments[version.stage]
        endpoint = f"/api/v1/models/{version.model.name}/predict"
        Deployment.objects.get_or_create(
            model_id=version.model_id,
            environment=environment,
            mode="primary",
            status="active",
            defaults={
                "version_id": version.pk,
                "traffic_percent": 100.0,
                "endpoint_url": endpoint if environment == "production" else f"{endpoint}?environment=staging",
            },
        )


class Migration(migrations.Migration):
    dependencies = [("serving", "0002_roles"), ("registry", "0002_fast_inference_form")]

    operations = [migrations.RunPython(deploy_current_stages, migrations.RunPython.noop)]
