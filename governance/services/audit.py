"""The audit trail: append-only, hash-chained entries written in the transaction of the change."""

import hashlib
import json

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from governance.context import current_request
from governance.models import AuditEntry

GENESIS_HASH = "0" * 64
# Key of the PostgreSQL advisory lock that serialises appends to the chain.
_AUDIT_CHAIN_LOCK = 0x6D6C6F7073


def _lock_chain():
    """Serialise writers until commit so each entry chains onto the latest one.

    A row lock on the last entry is not enough: a waiting writer would wake up still
    seeing the old last entry and fork the chain. SQLite runs writes one at a time
    (IMMEDIATE transactions), so only PostgreSQL needs the advisory lock.
    """
    connection = transaction.get_connection()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_AUDIT_CHAIN_LOCK])


def _entry_content_hash(*, prev_hash, fields):
    payload = json.dumps({"prev": prev_hash, **fields}, sort_keys=True, cls=DjangoJSONEncoder)
    return hashlib.sha256(payload.encode()).hexdigest()


def audit_entry_fields(entry):
    """The fields of an entry that its hash covers."""
    return {
        "created_at": entry.created_at.isoformat(),
        "actor_name": entry.actor_name,
        "action": entry.action,
        "object_type": entry.object_type,
        "object_id": entry.object_id,
        "object_repr": entry.object_repr,
        "before": entry.before,
        "after": entry.after,
        "reason": entry.reason,
        "request_id": entry.request_id,
        "ip_address": entry.ip_address,
    }


def audit_record(
    *, actor, action, obj, before=None, after=None, reason="", request_id="", ip_address=None, actor_name=None
):
    """Append one entry to the audit trail, inside the caller's transaction."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit_record must run inside the transaction of the change it records.")
    if not request_id and ip_address is None:
        request_id, ip_address = current_request()
    _lock_chain()
    last = AuditEntry.objects.order_by("-id").only("entry_hash").first()
    entry = AuditEntry(
        created_at=timezone.now(),
        actor=actor if actor is not None and actor.is_authenticated else None,
        actor_name=actor_name or (actor.get_username() if actor is not None and actor.is_authenticated else "system"),
        action=action,
        object_type=f"{obj._meta.app_label}.{obj._meta.model_name}",
        object_id=str(obj.pk),
        object_repr=str(obj)[:200],
        before=json.loads(json.dumps(before, cls=DjangoJSONEncoder)) if before is not None else None,
        after=json.loads(json.dumps(after, cls=DjangoJSONEncoder)) if after is not None else None,
        reason=reason,
        request_id=request_id,
        ip_address=ip_address,
        prev_hash=last.entry_hash if last else GENESIS_HASH,
    )
    entry.entry_hash = _entry_content_hash(prev_hash=entry.prev_hash, fields=audit_entry_fields(entry))
    entry.save()
    return entry


def audit_chain_verify(*, on_progress=None):
    """Walk the chain oldest first; returns (entries checked, first broken entry or None, why it is broken)."""
    expected_prev = GENESIS_HASH
    checked = 0
    total = AuditEntry.objects.count()
    for entry in AuditEntry.objects.order_by("id").iterator(chunk_size=2000):
        if entry.prev_hash != expected_prev:
            return (
                checked,
                entry,
                "its prev_hash does not match the entry before it (an entry was removed or reordered)",
            )
        if _entry_content_hash(prev_hash=entry.prev_hash, fields=audit_entry_fields(entry)) != entry.entry_hash:
            return checked, entry, "its content does not match its hash (it was edited)"
        expected_prev = entry.entry_hash
        checked += 1
        if on_progress and checked % 1000 == 0:
            on_progress(checked, total)
    return checked, None, ""
