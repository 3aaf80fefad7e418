"""The audit log: one entry per state change, append-only, sealed with a key outside the database, verifiable."""

import csv
import hashlib
import io
import json
import threading
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, connections, transaction
from django.db.utils import DatabaseError
from django.urls import reverse

from experiments.models import Experiment
from governance.models import AuditAction, AuditEntry, WebhookDelivery, WebhookSubscription
from governance.services import (
    GENESIS_HASH,
    audit_chain_verify,
    audit_entry_fields,
    audit_entry_seal,
    audit_head_anchor,
    audit_record,
    webhook_subscription_save,
)

pytestmark = pytest.mark.django_db

on_postgresql = pytest.mark.skipif("connection.vendor != 'postgresql'")
ACTION = AuditAction.EXPERIMENT_UPDATED


def _record(n, actor=None, action=ACTION):
    experiment = Experiment.objects.get_or_create(name="audited")[0]
    with transaction.atomic():
        return [
            audit_record(actor=actor, action=action, obj=experiment, before={"n": i - 1}, after={"n": i})
            for i in range(n)
        ]


def _verify(*args):
    out = StringIO()
    call_command("verify_audit_log", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_entries_chain_onto_each_other_and_verify(django_user_model):
    user = django_user_model.objects.create_user("scientist", password="pw-scientist-1")
    first, second, third = _record(3, actor=user)
    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.entry_hash
    assert third.prev_hash == second.entry_hash
    assert (first.actor, first.actor_name, first.object_type) == (user, "scientist", "experiments.experiment")
    assert f"Audit log intact: 3 entries, every seal verified. Head: #{third.pk} {third.entry_hash}" in _verify()


@pytest.mark.django_db(transaction=True)
def test_audit_record_requires_a_transaction():
    experiment = Experiment.objects.create(name="x")
    with pytest.raises(RuntimeError, match="inside the transaction"):
        audit_record(actor=None, action=ACTION, obj=experiment)


def test_a_misspelt_action_is_refused_not_recorded():
    experiment = Experiment.objects.create(name="x")
    with transaction.atomic(), pytest.raises(ValueError, match="not an audit action"):
        audit_record(actor=None, action="experiment.touchd", obj=experiment)
    assert not AuditEntry.objects.exists()


def test_every_action_has_a_sentence_and_the_admin_filter_lists_them(client, django_user_model):
    assert all(label and label[0].isupper() for label in AuditAction.labels)
    client.force_login(django_user_model.objects.create_superuser("root", password="pw-root-1"))
    page = client.get(reverse("admin:governance_auditentry_changelist"))
    assert AuditAction.TRAFFIC_REQUESTED.label in page.content.decode()


def test_entries_cannot_be_changed_or_deleted_through_the_orm():
    entry = _record(1)[0]
    entry.reason = "rewritten"
    with pytest.raises(PermissionError):
        entry.save()
    with pytest.raises(PermissionError):
        entry.delete()
    with pytest.raises(PermissionError):
        AuditEntry.objects.filter(pk=entry.pk).update(reason="rewritten")
    with pytest.raises(PermissionError):
        AuditEntry.objects.all().delete()


def _tamper(sql, params=()):
    """Edit the table behind the ORM's back, as the database's owner would (triggers off for the session)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(sql, params)
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL session_replication_role = origin")


# Each field the seal must cover, with an edit of it made behind the ORM's back.
_EDITS = {
    "reason": ("reason", "'edited'"),
    "after": ("after", """'{"n": 99}'"""),
    "before": ("before", """'{"n": 98}'"""),
    "actor_name": ("actor_name", "'mallory'"),
    "action": ("action", "'policy.updated'"),
    "object_type": ("object_type", "'registry.modelversion'"),
    "object_id": ("object_id", "'999'"),
    "object_repr": ("object_repr", "'something else'"),
    "request_id": ("request_id", "'forged'"),
    "created_at": ("created_at", "'2001-01-01T00:00:00+00:00'"),
}


@pytest.mark.parametrize("field", sorted(_EDITS))
def test_verify_names_the_first_entry_whose_field_was_edited(field):
    entries = _record(4)
    column, value = _EDITS[field]
    if connection.vendor == "sqlite" and column in ("after", "before"):
        value = value.strip("'").join("''")
    _tamper(f"UPDATE governance_auditentry SET {column} = {value} WHERE id = %s", [entries[2].pk])
    with pytest.raises(CommandError, match=f"broken at entry #{entries[2].pk}.*was edited.*2 entries before it"):
        _verify()


def test_verify_notices_a_removed_entry():
    entries = _record(4)
    _tamper("DELETE FROM governance_auditentry WHERE id = %s", [entries[1].pk])
    report = audit_chain_verify()
    assert (report.checked, report.broken.pk) == (1, entries[2].pk)
    assert "removed" in report.why


_RESEAL = "UPDATE governance_auditentry SET prev_hash = %s, entry_hash = %s WHERE id = %s"


def _rechain_with_plain_sha256():
    """What an attacker with the project's old code and the database could do: rewrite and re-hash the chain."""
    prev = GENESIS_HASH
    for entry in AuditEntry.objects.order_by("id"):
        payload = json.dumps({"prev": prev, **audit_entry_fields(entry)}, sort_keys=True, cls=DjangoJSONEncoder)
        digest = hashlib.sha256(payload.encode()).hexdigest()
        _tamper(
            "UPDATE governance_auditentry SET prev_hash = %s, entry_hash = %s WHERE id = %s", [prev, digest, entry.pk]
        )
        prev = digest


def test_an_edited_log_rechained_without_the_key_fails_verification():
    entries = _record(3)
    _tamper("UPDATE governance_auditentry SET reason = 'edited' WHERE id = %s", [entries[1].pk])
    _rechain_with_plain_sha256()
    with pytest.raises(CommandError, match=f"broken at entry #{entries[0].pk}.*AUDIT_LOG_KEY"):
        _verify()


def test_a_log_rechained_with_another_key_fails_verification():
    _record(3)
    prev = GENESIS_HASH
    for entry in AuditEntry.objects.order_by("id"):
        seal = audit_entry_seal(prev_hash=prev, fields=audit_entry_fields(entry), key=b"the attacker's key")
        _tamper(
            "UPDATE governance_auditentry SET prev_hash = %s, entry_hash = %s WHERE id = %s", [prev, seal, entry.pk]
        )
        prev = seal
    assert not audit_chain_verify().intact


def test_a_log_missing_its_last_entries_fails_against_the_head_kept_outside():
    entries = _record(5)
    head = entries[-1].entry_hash  # what the log stream or an anchor said
    assert "intact" in _verify("--expect-head", head)
    _tamper("DELETE FROM governance_auditentry WHERE id >= %s", [entries[3].pk])
    assert audit_chain_verify().intact  # the shortened chain is self-consistent...
    with pytest.raises(CommandError, match="expected head .* is not in the chain"):
        _verify("--expect-head", head)  # ...but not against the head kept outside the database


def test_a_truncated_log_fails_against_the_head_kept_outside():
    entries = _record(3)
    _tamper("DELETE FROM governance_auditentry")
    assert audit_chain_verify().checked == 0
    with pytest.raises(CommandError, match="not in the chain"):
        _verify("--expect-head", entries[-1].entry_hash)


def test_every_append_logs_the_new_head(caplog, django_capture_on_commit_callbacks):
    with caplog.at_level("INFO", logger="mlops_site.audit"), django_capture_on_commit_callbacks(execute=True):
        entry = _record(1)[0]
    assert f"audit head #{entry.pk} {entry.entry_hash}" in caplog.text


def test_the_daily_anchor_sends_the_head_to_subscribers_and_the_log(
    caplog, django_capture_on_commit_callbacks, django_user_model
):
    webhook_subscription_save(
        subscription=WebhookSubscription(
            name="notary", url="http://127.0.0.1:9/", secret="s", events=["audit.anchored"]
        ),
        by=django_user_model.objects.create_superuser("notary-admin", password="pw-notary-1"),
    )  # audited too: the chain holds its webhook.created entry, then the two below
    entries = _record(2)
    with caplog.at_level("INFO", logger="mlops_site.audit"), django_capture_on_commit_callbacks(execute=False):
        head_id, head_hash = audit_head_anchor()
    assert (head_id, head_hash) == (entries[-1].pk, entries[-1].entry_hash)
    delivery = WebhookDelivery.objects.get(event="audit.anchored")
    assert delivery.payload["data"] == {"entry_id": head_id, "entry_hash": head_hash, "entries": 3}
    assert f"audit anchor #{head_id} {head_hash}" in [record.getMessage() for record in caplog.records]


@on_postgresql
def test_postgresql_refuses_update_delete_and_truncate_in_sql():
    entry = _record(1)[0]
    with connection.cursor() as cursor:  # the suite switches the TRUNCATE trigger off to flush; on again here
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # ALTER TABLE waits for no deferred foreign-key check
        cursor.execute("ALTER TABLE governance_auditentry ENABLE TRIGGER governance_auditentry_no_truncate")
    try:
        for sql in (
            "UPDATE governance_auditentry SET reason = 'x' WHERE id = %s",
            "DELETE FROM governance_auditentry WHERE id = %s",
            "TRUNCATE governance_auditentry CASCADE",
        ):
            with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as c:
                c.execute(sql, [entry.pk] if "%s" in sql else None)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE governance_auditentry DISABLE TRIGGER governance_auditentry_no_truncate")
    assert AuditEntry.objects.get(pk=entry.pk).reason == ""


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_keep_one_unbroken_chain():
    Experiment.objects.create(name="audited")
    errors = []

    def write():
        try:
            for _ in range(5):
                _record(1)
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    report = audit_chain_verify()
    assert (report.checked, report.broken) == (40, None), report.why


def test_admin_is_read_only_filters_exports_and_follows_an_object(client, django_user_model):
    admin_user = django_user_model.objects.create_superuser("auditor-admin", password="pw-a-1")
    client.force_login(admin_user)
    _record(2, action=ACTION)
    other = Experiment.objects.create(name="other")
    with transaction.atomic():
        audit_record(actor=admin_user, action=AuditAction.EXPERIMENT_CREATED, obj=other, reason="typo")
    changelist = reverse("admin:governance_auditentry_changelist")
    assert client.get(reverse("admin:governance_auditentry_add")).status_code == 403
    page = client.get(changelist + "?action=experiment.created")
    assert page.context["cl"].result_count == 1
    history = client.get(changelist + f"?object_type=experiments.experiment&object_id={other.pk}")
    assert history.context["cl"].result_count == 1

    export = client.get(reverse("admin:governance_auditentry_export") + f"?action={ACTION}")
    rows = list(csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode())))
    assert export["Content-Type"] == "text/csv"
    assert [row["action"] for row in rows] == [ACTION, ACTION]
    assert rows[0]["entry_hash"]
    assert rows[1]["prev_hash"] == rows[0]["entry_hash"]
