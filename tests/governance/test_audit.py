"""The audit log: one entry per state change, append-only, hash-chained and verifiable."""

import csv
import io
import threading
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections, transaction
from django.urls import reverse

from experiments.models import Experiment
from governance.models import AuditEntry
from governance.services import GENESIS_HASH, audit_chain_verify, audit_record

pytestmark = pytest.mark.django_db

on_postgresql = pytest.mark.skipif("connection.vendor != 'postgresql'")


def _record(n, actor=None, action="experiment.touched"):
    experiment = Experiment.objects.get_or_create(name="audited")[0]
    with transaction.atomic():
        return [audit_record(actor=actor, action=action, obj=experiment, after={"n": i}) for i in range(n)]


def test_entries_chain_onto_each_other_and_verify(user):
    first, second, third = _record(3, actor=user)
    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.entry_hash
    assert third.prev_hash == second.entry_hash
    assert (first.actor, first.actor_name, first.object_type) == (user, "scientist", "experiments.experiment")
    out = StringIO()
    call_command("verify_audit_log", stdout=out, stderr=StringIO())
    assert "Audit log intact: 3 entries" in out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_audit_record_requires_a_transaction():
    experiment = Experiment.objects.create(name="x")
    with pytest.raises(RuntimeError, match="inside the transaction"):
        audit_record(actor=None, action="x", obj=experiment)


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


def _tamper(sql, params):
    """Edit the table behind the ORM's back, as someone with database access would."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":  # a superuser can switch triggers off for the session
            cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(sql, params)
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL session_replication_role = origin")


def test_verify_names_the_first_edited_entry():
    entries = _record(4)
    _tamper("UPDATE governance_auditentry SET reason = %s WHERE id = %s", ["edited", entries[2].pk])
    with pytest.raises(CommandError, match=f"broken at entry #{entries[2].pk}.*was edited.*2 entries before it"):
        call_command("verify_audit_log", stdout=StringIO(), stderr=StringIO())


def test_verify_notices_a_removed_entry():
    entries = _record(4)
    _tamper("DELETE FROM governance_auditentry WHERE id = %s", [entries[1].pk])
    checked, broken, why = audit_chain_verify()
    assert (checked, broken.pk) == (1, entries[2].pk)
    assert "removed" in why


@on_postgresql
def test_postgresql_refuses_update_and_delete_in_sql():
    from django.db.utils import DatabaseError

    entry = _record(1)[0]
    for sql in (
        "UPDATE governance_auditentry SET reason = 'x' WHERE id = %s",
        "DELETE FROM governance_auditentry WHERE id = %s",
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, [entry.pk])
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
    checked, broken, why = audit_chain_verify()
    assert (checked, broken) == (40, None), why


def test_admin_is_read_only_filters_exports_and_follows_an_object(client, django_user_model):
    admin_user = django_user_model.objects.create_superuser("auditor-admin", password="pw-a-1")
    client.force_login(admin_user)
    _record(2, action="experiment.touched")
    other = Experiment.objects.create(name="other")
    with transaction.atomic():
        audit_record(actor=admin_user, action="experiment.renamed", obj=other, reason="typo")
    changelist = reverse("admin:governance_auditentry_changelist")
    assert client.get(reverse("admin:governance_auditentry_add")).status_code == 403
    page = client.get(changelist + "?action=experiment.renamed")
    assert page.context["cl"].result_count == 1
    history = client.get(changelist + f"?object_type=experiments.experiment&object_id={other.pk}")
    assert history.context["cl"].result_count == 1

    export = client.get(reverse("admin:governance_auditentry_export") + "?action=experiment.touched")
    rows = list(csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode())))
    assert export["Content-Type"] == "text/csv"
    assert [row["action"] for row in rows] == ["experiment.touched", "experiment.touched"]
    assert rows[0]["entry_hash"]
    assert rows[1]["prev_hash"] == rows[0]["entry_hash"]
