"""The audit trail: append-only, hash-chained entries written in the transaction of the change.

Each entry's hash is an HMAC-SHA256, under AUDIT_LOG_KEY (a key that lives in the environment, never
in the database), of its content and the hash of the entry before it. Whoever owns the database can
delete or rewrite rows, but cannot forge the chain without the key; and the head of the chain leaves
the database as it grows (a log line per entry, a daily `audit.anchored` webhook event), so a
truncated log or one missing its last entries fails `verify_audit_log --expect-head HASH`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from governance.context import current_request
from governance.models import AuditAction, AuditEntry

if TYPE_CHECKING:
    from collections.abc import Callable

    from django.db.models import Model

    from core.permissions import Actor

GENESIS_HASH = "0" * 64
# Key of the PostgreSQL advisory lock that serialises appends to the chain.
_AUDIT_CHAIN_LOCK = 0x6D6C6F7073
# The log stream every appended entry's hash goes to: an anchor of the chain outside the database.
head_logger = logging.getLogger("mlops_site.audit")


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


def audit_entry_seal(*, prev_hash: str, fields: dict, key: bytes | None = None) -> str:
    """The hash an entry must carry: HMAC-SHA256 under the audit key of its fields and the previous hash."""
    payload = json.dumps({"prev": prev_hash, **fields}, sort_keys=True, cls=DjangoJSONEncoder)
    return hmac.new(key or settings.AUDIT_LOG_KEY.encode(), payload.encode(), hashlib.sha256).hexdigest()


def audit_entry_fields(entry: AuditEntry) -> dict[str, Any]:
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
    *,
    actor: Actor,
    action: AuditAction,
    obj: Model,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    reason: str = "",
    request_id: str = "",
    ip_address: str | None = None,
    actor_name: str | None = None,
) -> AuditEntry:
    """Append one entry to the audit trail, inside the caller's transaction."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit_record must run inside the transaction of the change it records.")
    if action not in AuditAction.values:
        raise ValueError(f"{action!r} is not an audit action; list it in governance.models.AuditAction")
    if not request_id and ip_address is None:
        request_id, ip_address = current_request()
    _lock_chain()
    last = AuditEntry.objects.order_by("-id").only("entry_hash").first()
    entry = AuditEntry(
        created_at=timezone.now(),
        actor=actor if actor is not None and actor.is_authenticated else None,
        actor_name=actor_name or (actor.get_username() if actor is not None and actor.is_authenticated else "system"),
        action=str(action),
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
    entry.entry_hash = audit_entry_seal(prev_hash=entry.prev_hash, fields=audit_entry_fields(entry))
    entry.save()
    entry_id, entry_hash, name = entry.pk, entry.entry_hash, entry.action
    transaction.on_commit(lambda: head_logger.info("audit head #%s %s %s", entry_id, entry_hash, name))
    return entry


@dataclass(frozen=True)
class ChainReport:
    """What verifying the chain found: how many entries hold, the first broken one and why, the head."""

    checked: int
    broken: AuditEntry | None = None
    why: str = ""
    head_id: int | None = None
    head_hash: str = GENESIS_HASH

    @property
    def intact(self) -> bool:
        return self.broken is None and not self.why


def audit_chain_verify(
    *, expect_head: str = "", on_progress: Callable[[int, int], object] | None = None
) -> ChainReport:
    """Walk the chain oldest first, recomputing every seal with the key.

    With `expect_head` (a hash taken outside the database: a logged head, an anchored one), the chain
    must also still hold that entry: a log truncated or cut short before it fails.
    """
    expect_head = (expect_head or "").strip().lower()
    expected_prev = GENESIS_HASH
    checked, head_id, seen_expected = 0, None, not expect_head
    total = AuditEntry.objects.count()
    for entry in AuditEntry.objects.order_by("id").iterator(chunk_size=2000):
        if entry.prev_hash != expected_prev:
            why = "its prev_hash does not match the entry before it (an entry was removed or reordered)"
            return ChainReport(checked, entry, why, head_id, expected_prev)
        if audit_entry_seal(prev_hash=entry.prev_hash, fields=audit_entry_fields(entry)) != entry.entry_hash:
            why = "its content does not match its seal (it was edited, or AUDIT_LOG_KEY is not the key that wrote it)"
            return ChainReport(checked, entry, why, head_id, expected_prev)
        expected_prev, head_id = entry.entry_hash, entry.pk
        seen_expected = seen_expected or entry.entry_hash == expect_head
        checked += 1
        if on_progress and checked % 1000 == 0:
            on_progress(checked, total)
    if not seen_expected:
        why = (
            f"the expected head {expect_head[:16]}… is not in the chain: entries were removed from its end, "
            "or the log was rewritten"
        )
        return ChainReport(checked, None, why, head_id, expected_prev)
    return ChainReport(checked, None, "", head_id, expected_prev)


def audit_head() -> tuple[int | None, str]:
    """(id, hash) of the newest entry, or (None, GENESIS_HASH) for an empty log."""
    last = AuditEntry.objects.order_by("-id").only("entry_hash").first()
    return (last.pk, last.entry_hash) if last else (None, GENESIS_HASH)
