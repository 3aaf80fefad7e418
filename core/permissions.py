"""Who may do what: the one check every service makes with the acting user, and its DRF twin for reads.

Services decide every permission (`permission_require` with the user passed in); the API, admin and CLI
only translate the refusal (403 with the reason, an admin message, exit 1). The DRF classes below guard
read-only endpoints, where there is no service call to decide.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

from rest_framework.permissions import BasePermission

from core.errors import NotPermitted

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.contrib.auth.models import AnonymousUser

    # The acting user a service is handed as `by=`: a user, a request's anonymous user, or None (the system).
    Actor: TypeAlias = AbstractBaseUser | AnonymousUser | None


def _names(perms):
    return " or ".join(perm.split(".", 1)[1] for perm in perms)


def permission_require(user: Actor, *perms: str, doing: str) -> None:
    """Refuse unless `user` is signed in and holds one of `perms`; the message says what they tried and lack."""
    if user is None or not user.is_authenticated:
        raise NotPermitted(f"{doing} needs a signed-in user")
    if not user.is_active:
        raise NotPermitted(f"{user.get_username()} is deactivated")
    if not any(user.has_perm(perm) for perm in perms):
        raise NotPermitted(f"{user.get_username()} may not {doing}: it needs the {_names(perms)} permission")


def require_perm(*perms, doing):
    """A DRF permission class admitting users who hold one of `perms` (for read-only endpoints)."""

    class _HasPerm(BasePermission):
        message = f"you may not {doing}: it needs the {_names(perms)} permission"

        def has_permission(self, request, view):
            user = request.user
            return bool(user and user.is_authenticated and any(user.has_perm(perm) for perm in perms))

    _HasPerm.__name__ = "HasPerm_" + "_or_".join(perm.replace(".", "_") for perm in perms)
    return _HasPerm
