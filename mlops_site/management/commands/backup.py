"""manage.py backup FILE: the database and the artifact store in one tar, with the audit log's head."""

from django.core.management.base import BaseCommand, CommandError

from core.errors import ApplicationError
from mlops_site.backup import backup_create


class Command(BaseCommand):
    help = (
        "Write the database (pg_dump on PostgreSQL, SQLite's online backup otherwise) and every file of "
        "ARTIFACT_ROOT to one tar, with a manifest recording checksums and the audit log's head. "
        "`manage.py restore FILE` puts it into a fresh database and verifies the audit chain."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", help="The tar file to write (never overwritten).")

    def handle(self, *args, **options):
        try:
            result = backup_create(path=options["path"])
        except ApplicationError as exc:
            raise CommandError(str(exc))
        manifest = result.manifest
        self.stdout.write(
            self.style.SUCCESS(
                f"Backup written to {result.path}: {manifest['database']['vendor']} database, "
                f"{manifest['artifacts']['files']} artifact files, {manifest['audit']['entries']} audit entries "
                f"(head #{manifest['audit']['head_id']} {manifest['audit']['head_hash']})."
            )
        )
