"""Seal the entries written before the audit chain was keyed (plain SHA-256) with AUDIT_LOG_KEY.

A plain hash chain can be recomputed by anyone who can write the table; from here on every entry's
seal is an HMAC under a key kept outside the database. The entries already written are sealed again,
in order, and the resealing itself is recorded with the old head hash, so an anchor of the old chain
taken before the upgrade can still be checked against it. On a new database there is nothing to do.
"""

from django.db import migrations
from django.utils import timezone

from governance.services.audit import GENESIS_HASH, audit_entry_fields, audit_entry_seal

TRIGGER = "governance_auditentry_append_only"


def reseal(apps, schema_editor):
    AuditEntry = apps.get_model("governance", "AuditEntry")
    entries = list(AuditEntry.objects.order_by("id"))
    if not entries:
        return
    postgresql = schema_editor.connection.vendor == "postgresql"
    if postgresql:  # only the table's owner, who runs migrations, may do this
        schema_editor.execute(f"ALTER TABLE governance_auditentry DISABLE TRIGGER {TRIGGER}", params=None)
    old_head, prev = entries[-1].entry_hash, GENESIS_HASH
    for entry in entries:
        seal = audit_entry_seal(prev_hash=prev, fields=audit_entry_fields(entry))
        AuditEntry.objects.filter(pk=entry.pk).update(prev_hash=prev, entry_hash=seal)
        prev = seal
    if postgresql:
        schema_editor.execute(f"ALTER TABLE governance_auditentry ENABLE TRIGGER {TRIGGER}", params=None)
    entry = AuditEntry(
        created_at=timezone.now(),
        actor_name="migration",
        action="audit.resealed",
        object_type="governance.auditentry",
        object_id=str(entries[-1].pk),
        object_repr=f"{len(entries)} entries",
        before={"head": old_head, "seal": "sha256"},
        after={"head": prev, "seal": "hmac-sha256", "entries": len(entries)},
        reason="the audit chain is keyed from now on (AUDIT_LOG_KEY)",
        request_id="",
        prev_hash=prev,
    )
    entry.entry_hash = audit_entry_seal(prev_hash=prev, fields=audit_entry_fields(entry))
    entry.save()


class Migration(migrations.Migration):
    dependencies = [("governance", "0006_audit_actions_and_truncate")]

    operations = [migrations.RunPython(reseal, migrations.RunPython.noop)]
