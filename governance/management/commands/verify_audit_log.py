"""manage.py verify_audit_log [--expect-head HASH]: prove the audit trail was not edited, cut short or rewritten.

Exit 0 when intact, 1 naming the first broken entry (or the missing expected head)."""

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from governance.services import audit_chain_verify


class Command(BaseCommand):
    help = (
        "Check every seal of the audit log's hash chain with AUDIT_LOG_KEY; with --expect-head, also that the log "
        "still holds an entry whose hash was taken outside the database. Exits 1 naming what is broken."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--expect-head",
            default="",
            metavar="HASH",
            help="A head hash kept outside the database (an audit.anchored webhook event, an 'audit head' log line).",
        )

    def handle(self, *args, **options):
        bar = tqdm(total=0, file=self.stderr._out, unit="entry", desc="verifying", disable=None)

        def progress(done, total):
            bar.total = total
            bar.n = done
            bar.refresh()

        try:
            report = audit_chain_verify(expect_head=options["expect_head"], on_progress=progress)
        finally:
            bar.close()
        if report.broken is not None:
            broken = report.broken
            raise CommandError(
                f"audit log broken at entry #{broken.pk} ({broken.created_at:%Y-%m-%d %H:%M:%S} "
                f"{broken.actor_name} {broken.action} {broken.object_repr}): {report.why}. "
                f"{report.checked} entries before it are intact."
            )
        if not report.intact:
            raise CommandError(f"audit log not intact: {report.why}. {report.checked} entries are sealed correctly.")
        self.stdout.write(
            self.style.SUCCESS(
                f"Audit log intact: {report.checked} entries, every seal verified. "
                f"Head: #{report.head_id} {report.head_hash}"
            )
        )
