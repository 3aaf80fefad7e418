from django.apps import AppConfig


class ServingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "serving"

    def ready(self):
        from django.db import transaction

        from registry.signals import traffic_approved, version_serving_form_changed, version_stage_changed
        from serving.services import deployments_follow_stage, deployments_follow_traffic_approval
        from serving.signal import signal_bump

        def follow(sender, version, from_stage, to_stage, by, **kwargs):
            deployments_follow_stage(version=version, from_stage=from_stage, to_stage=to_stage, by=by)

        def follow_traffic(sender, request, version, by, **kwargs):
            deployments_follow_traffic_approval(request=request, version=version, by=by)

        def reload(sender, version, by, **kwargs):
            # Serving processes load a version once: moving the signal makes them load the new form.
            transaction.on_commit(signal_bump)

        version_stage_changed.connect(follow, dispatch_uid="serving.deployments_follow_stage", weak=False)
        traffic_approved.connect(follow_traffic, dispatch_uid="serving.deployments_follow_traffic", weak=False)
        version_serving_form_changed.connect(reload, dispatch_uid="serving.reload_on_new_form", weak=False)
