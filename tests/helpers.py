"""Small helpers the test modules share."""

import contextlib


@contextlib.contextmanager
def worker_runs_what_is_queued():
    """A task queued in the block runs at once in this process, as a worker would run it (Celery's eager mode)."""
    from mlops_site.celery import app as celery_app

    celery_app.conf.task_always_eager = True
    try:
        yield
    finally:
        celery_app.conf.task_always_eager = False


def run_dispatches(callbacks):
    """The on-commit callbacks that hand a launched run to the Celery workers (the audit log adds its own)."""
    return [callback for callback in callbacks if "run_launch" in getattr(callback, "__qualname__", "")]


def dispatches(callbacks):
    """The on-commit callbacks that queue work, without the audit log's (it logs each committed head)."""
    return [callback for callback in callbacks if not getattr(callback, "__qualname__", "").startswith("audit_record")]


def user_with_permission(django_user_model, username, codename):
    """A staff user holding one permission and no role (to tell one permission from another)."""
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user(username, password=f"pw-{username}-1", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename=codename))
    return django_user_model.objects.get(pk=user.pk)  # permissions are cached per instance


def refused(error, call, match, field):
    """`call` raises `error` (an ApplicationError), its message (the words the API's JSON body carries)
    matching the regular expression `match`, naming `field` (None: no field); returns the error."""
    import re

    import pytest

    with pytest.raises(error) as caught:
        call()
    assert re.search(match, caught.value.message), caught.value.message
    assert caught.value.field == field, caught.value.field
    return caught.value
