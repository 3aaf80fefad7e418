"""Role changes are state changes too: granting or revoking a group is audited, whatever surface did it.
Changes to who may call the API (a token deleted, a user deactivated) move the auth change signal."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver
from rest_framework.authtoken.models import Token

from core.auth import auth_signal_bump
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


# --- Revocation takes effect at once --------------------------------------------------------------------
# The API remembers valid tokens (and their users' roles) in each process; whatever changes who may call
# it moves the auth change signal, so every process forgets them on its next request.


def _auth_changed(**kwargs):
    transaction.on_commit(auth_signal_bump)


@receiver(post_save, sender=get_user_model())
def _user_saved(sender, instance, update_fields=None, **kwargs):
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return  # every sign-in saves last_login: nothing about access changed
    _auth_changed()


post_delete.connect(_auth_changed, sender=get_user_model(), dispatch_uid="auth-user-deleted")
post_delete.connect(_auth_changed, sender=Token, dispatch_uid="auth-token-deleted")
m2m_changed.connect(_auth_changed, sender=get_user_model().groups.through, dispatch_uid="auth-roles-changed")
m2m_changed.connect(
    _auth_changed, sender=get_user_model().user_permissions.through, dispatch_uid="auth-permissions-changed"
)
