"""What the management commands share: who is acting, and turning domain errors into exit codes."""

import os

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError


def add_user_argument(parser, *, required):
    parser.add_argument(
        "--user",
        default=os.environ.get("MLOPS_USER"),
        help="Username you act as (default: $MLOPS_USER)" + ("; required." if required else "."),
    )


def user_resolve(username, *, required):
    """The user named by --user; CommandError if it is missing (when required) or unknown."""
    if not username:
        if required:
            raise CommandError(
                "say who you are with --user USERNAME (or set MLOPS_USER): every change is checked against "
                "your role and audited under your name"
            )
        return None
    user = get_user_model().objects.filter(username=username, is_active=True).first()
    if user is None:
        raise CommandError(f"no active user {username!r}")
    return user
