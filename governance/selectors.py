"""Reads of the governance app."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from core.errors import InvalidInput
from governance.models import AuditEntry

if TYPE_CHECKING:
    from django.db.models import Model, QuerySet


def _moment(value, field):
    """A date ("2026-11-22": the whole day counts) or an aware date-time (naive ones are read in TIME_ZONE)."""
    try:
        parsed = parse_date(value) if len(value) == 10 else parse_datetime(value)
    except ValueError:
        parsed = None
    if parsed is None:
        raise InvalidInput("must be an ISO date or date-time, e.g. 2026-11-22 or 2026-11-22T17:00:00Z", field=field)
    if isinstance(parsed, datetime) and timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed)
    return parsed


def audit_entry_list(
    *,
    actor: str | None = None,
    action: str | None = None,
    object_type: str | None = None,
    object_id: str | None = None,
    since: str | None = None,
    until: str | None = None,
    q: str | None = None,
) -> QuerySet[AuditEntry]:
    """Audit entries, newest first, filtered as the admin filters them."""
    entries = AuditEntry.objects.all()
    if actor:
        entries = entries.filter(actor_name=actor)
    if action:
        entries = entries.filter(action=action)
    if object_type:
        entries = entries.filter(object_type=object_type)
    if object_id:
        entries = entries.filter(object_id=object_id)
    for value, field, lookup in ((since, "since", "gte"), (until, "until", "lte")):
        if value:
            moment = _moment(value, field)
            key = f"created_at__{lookup}" if isinstance(moment, datetime) else f"created_at__date__{lookup}"
            entries = entries.filter(**{key: moment})
    if q:
        entries = entries.filter(
            Q(object_repr__icontains=q) | Q(reason__icontains=q) | Q(actor_name__icontains=q) | Q(request_id=q)
        )
    return entries.order_by("-id")


def audit_entries_of(obj: Model, *, action: str | None = None) -> QuerySet[AuditEntry]:
    """The audit entries of one object (any model instance), oldest first; only `action` if given."""
    entries = AuditEntry.objects.filter(
        object_type=f"{obj._meta.app_label}.{obj._meta.model_name}", object_id=str(obj.pk)
    )
    if action:
        entries = entries.filter(action=action)
    return entries.order_by("id")
