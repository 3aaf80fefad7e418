"""What the registry announces to other apps, inside the transaction of the change."""

from django.dispatch import Signal

# Sent after a version was registered: sender=ModelVersion, version, by. Receivers run inside the
# registration's transaction; heavy work belongs in transaction.on_commit (e.g. a task).
version_registered = Signal()

# Sent after a version's stage changed: sender=ModelVersion, version, from_stage, to_stage, by.
# Serving follows it with deployments; receivers run in the same transaction and must audit their changes.
version_stage_changed = Signal()

# Sent when a second person approved a canary or shadow request: sender=PromotionRequest, request,
# version, by. Serving puts the version beside the environment's primary in the same transaction
# (audited); a receiver that raises (no primary any more) undoes the approval.
traffic_approved = Signal()

# Sent after a version's fast inference form was rebuilt: sender=ModelVersion, version, by.
# Serving drops the loaded copy so the new form is served; receivers run in the same transaction.
version_serving_form_changed = Signal()
