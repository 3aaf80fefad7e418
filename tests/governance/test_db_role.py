"""The application's PostgreSQL role reads and appends the audit log but cannot rewrite or empty it."""

from io import StringIO

import psycopg2
import pytest
from django.core.management import call_command
from django.db import connection

from experiments.models import Experiment
from governance.models import AuditAction
from governance.services import audit_record

ROLE = "mlops_app_test"
pytestmark = [pytest.mark.skipif("connection.vendor != 'postgresql'"), pytest.mark.django_db(transaction=True)]


@pytest.fixture
def app_connection():
    """A connection as the application role, made by the command the README tells operators to run."""
    call_command("db_app_role", ROLE, "--apply", stdout=StringIO())
    settings = connection.settings_dict
    conn = psycopg2.connect(
        dbname=settings["NAME"], user=ROLE, host=settings["HOST"] or "127.0.0.1", port=settings["PORT"] or 5432
    )
    conn.autocommit = True
    yield conn
    conn.close()
    with connection.cursor() as cursor:
        cursor.execute(f"DROP OWNED BY {ROLE}; DROP ROLE {ROLE}")


def test_the_app_role_appends_and_reads_but_cannot_update_delete_or_truncate_the_audit_log(app_connection):
    from django.db import transaction

    experiment = Experiment.objects.create(name="audited")
    with transaction.atomic():
        entry = audit_record(actor=None, action=AuditAction.EXPERIMENT_CREATED, obj=experiment)
    with app_connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM governance_auditentry")
        assert cursor.fetchone() == (1,)
        cursor.execute("UPDATE experiments_experiment SET description = 'edited' WHERE id = %s", [experiment.pk])
        for sql in (
            "UPDATE governance_auditentry SET reason = 'x'",
            "DELETE FROM governance_auditentry",
            "TRUNCATE governance_auditentry",
            "ALTER TABLE governance_auditentry DISABLE TRIGGER ALL",
        ):
            with pytest.raises(psycopg2.Error, match="permission denied|must be owner"):
                cursor.execute(sql)
        cursor.execute(
            "INSERT INTO governance_auditentry (created_at, actor_name, action, object_type, object_id, object_repr,"
            " reason, request_id, prev_hash, entry_hash) VALUES (now(), 'app', 'experiment.updated', 'x', '1', 'x',"
            " '', '', %s, 'appended-by-the-app-role')",
            [entry.entry_hash],
        )
    experiment.refresh_from_db()
    assert experiment.description == "edited"
