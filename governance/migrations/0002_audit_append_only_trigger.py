"""On PostgreSQL, refuse UPDATE and DELETE of audit entries in the database itself."""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION governance_auditentry_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit entries are append-only: % refused on governance_auditentry', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER governance_auditentry_append_only
    BEFORE UPDATE OR DELETE ON governance_auditentry
    FOR EACH ROW EXECUTE FUNCTION governance_auditentry_append_only();
"""
DROP = """
DROP TRIGGER IF EXISTS governance_auditentry_append_only ON governance_auditentry;
DROP FUNCTION IF EXISTS governance_auditentry_append_only();
"""


def _on_postgresql(sql):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql, params=None)  # no params: the % in the SQL is PL/pgSQL

    return run


class Migration(migrations.Migration):
    dependencies = [("governance", "0001_initial")]

    operations = [migrations.RunPython(_on_postgresql(CREATE), _on_postgresql(DROP))]
