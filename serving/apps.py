from django.apps import AppConfig


class ServingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "serving"

    def ready(self):
        from registry.signals import version_stage_changed
        from serving.services import deployments_follow_stage

        def follow(sender, version, from_stage, to_stage, by, **kwargs):
            deployments_follow_stage(version=version, from_stage=from_stage, to_stage=to_stage, by=by)

        version_stage_changed.connect(follow, dispatch_uid="serving.deployments_follow_stage", weak=False)
