"""DRF permission classes built from Django permissions, with a 403 body that names what is missing."""

from rest_framework.permissions import BasePermission


def require_perm(perm, *, doing):
    """A permission class admitting users who hold `perm`, e.g. require_perm("registry.view_modelversion")."""

    class _HasPerm(BasePermission):
        message = f"you may not {doing}: it needs the {perm.split('.', 1)[1]} permission"

        def has_permission(self, request, view):
            return bool(request.user and request.user.is_authenticated and request.user.has_perm(perm))

    _HasPerm.__name__ = f"HasPerm_{perm.replace('.', '_')}"
    return _HasPerm
