"""manage.py restore FILE: a backup into a fresh database and an empty ARTIFACT_ROOT, then the audit chain
verified against the head the backup recorded. Exit 1 naming what is wrong."""

from django.core.management.base import BaseCommand, CommandError

from core.errors import ApplicationError
from mlops_site.backup import backup_restore


class Command(BaseCommand):
    help = (
        "Restore a `manage.py backup` file into the database of DATABASE_URL (it must be empty: createdb a "
        "new one) and the empty ARTIFACT_ROOT, then verify every seal of the audit log and that its head is "
        "the one recorded at backup time. Run it with the AUDIT_LOG_KEY of the platform that made the backup."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", help="A file written by `manage.py backup`.")

    def handle(self, *args, **options):
        try:
            result = backup_restore(path=options["path"])
        except ApplicationError as exc:
            raise CommandError(str(exc))
        self.stdout.write(
            self.style.SUCCESS(
                f"Restored the backup of {result.manifest['created_at']}: {result.artifact_files} artifact files; "
                f"audit log intact: {result.audit_entries} entries, head {result.audit_head} as recorded."
            )
        )
