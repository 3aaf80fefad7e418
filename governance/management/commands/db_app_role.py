"""manage.py db_app_role ROLE [--password PW] [--apply]: the PostgreSQL role web and workers should run as.

Migrations run as the owner of the tables; the application runs as a role that may read and write its
rows but, on the audit log, only read and append: no UPDATE, DELETE or TRUNCATE, which on PostgreSQL
the owner alone could otherwise do (and the triggers refuse even the owner's plain statements).
"""

from django.core.management.base import BaseCommand, CommandError
from django.db import connection

AUDIT_TABLE = "governance_auditentry"


def app_role_sql(role, password=None):
    """The statements that create (if missing) and grant the application role, as psycopg2 SQL objects."""
    from psycopg2 import sql

    name = sql.Identifier(role)
    login = sql.SQL("LOGIN PASSWORD {}").format(sql.Literal(password)) if password else sql.SQL("LOGIN")
    return [
        sql.SQL(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {}) THEN CREATE ROLE {} {}; END IF; END $$"
        ).format(sql.Literal(role), name, login),
        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(connection.settings_dict["NAME"]), name),
        sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(name),
        sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}").format(name),
        sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {}").format(name),
        # The audit log: read and append only.
        sql.SQL("REVOKE UPDATE, DELETE, TRUNCATE ON {} FROM {}").format(sql.Identifier(AUDIT_TABLE), name),
        # Tables and sequences later migrations create (as the owner running this) get the same grants.
        sql.SQL(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {}"
        ).format(name),
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {}").format(name),
    ]


class Command(BaseCommand):
    help = (
        "Print (or with --apply, run) the SQL that makes the PostgreSQL role the web and worker processes should "
        "use: read and write every table, but only read and append the audit log. Run it as the tables' owner, "
        "after migrate."
    )

    def add_arguments(self, parser):
        parser.add_argument("role", help="Role name, e.g. mlops_app.")
        parser.add_argument("--password", help="Its password (omit to set it yourself, or with trust/peer auth).")
        parser.add_argument("--apply", action="store_true", help="Run the statements on DATABASE_URL's database.")

    def handle(self, *args, **options):
        if connection.vendor != "postgresql":
            raise CommandError("db_app_role is for PostgreSQL (DATABASE_URL); SQLite has no roles")
        with connection.cursor() as cursor:
            statements = [
                statement.as_string(cursor.connection)
                for statement in app_role_sql(options["role"], options["password"])
            ]
            for statement in statements:
                self.stdout.write(statement + ";")
                if options["apply"]:
                    cursor.execute(statement)
        if options["apply"]:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Role {options['role']!r} is ready: point the web and worker processes' DATABASE_URL at it, and "
                    "keep the owner's URL for migrate."
                )
            )
