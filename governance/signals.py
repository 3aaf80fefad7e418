"""Role changes are state changes too: granting or revoking a group is audited, whatever surface did it."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.db.models.signals import m2m_changed
from django.dispatch import receiver

from governance.context import current_user
from governance.models import AuditAction
from governance.services import audit_record

_ACTIONS = {"post_add": AuditAction.ROLE_GRANTED, "post_remove": AuditAction.ROLE_REVOKED}


@receiver(m2m_changed, sender=get_user_model().groups.through)
def audit_role_change(sender, instance, action, reverse, pk_set, **kwargs):
    if action == "pre_clear":
        # clear() does not say which groups it removes: note them now, audit them as revoked after.
        if reverse:  # group.user_set.clear(): every member loses this one group
            instance._roles_cleared = {pk: [instance.pk] for pk in instance.user_set.values_list("pk", flat=True)}
        else:
            instance._roles_cleared = {instance.pk: list(instance.groups.values_list("pk", flat=True))}
        return
    if action == "post_clear":
        pairs = [
            (user_pk, group_pk)
            for user_pk, group_pks in getattr(instance, "_roles_cleared", {}).items()
            for group_pk in group_pks
        ]
        name = AuditAction.ROLE_REVOKED
    elif action in _ACTIONS:
        pairs = [(pk, instance.pk) for pk in pk_set] if reverse else [(instance.pk, pk) for pk in pk_set]
        name = _ACTIONS[action]
    else:
        return
    users = get_user_model().objects.in_bulk({user_pk for user_pk, _ in pairs})
    groups = Group.objects.in_bulk({group_pk for _, group_pk in pairs})
    with transaction.atomic():
        for user_pk, group_pk in pairs:
            audit_record(
                actor=current_user(),
                action=name,
                obj=users[user_pk],
                after={"role": groups[group_pk].name},
            )
