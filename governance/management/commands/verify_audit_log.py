"""manage.py verify_audit_log: prove the audit trail was not edited. Exit 0 intact, 1 naming the first broken entry."""

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from governance.services import audit_chain_verify


class Command(BaseCommand):
    help = "Check the hash chain of the audit log; exits 1 naming the first broken entry."

    def handle(self, *args, **options):
        bar = tqdm(total=0, file=self.stderr._out, unit="entry", desc="verifying", disable=None)

        def progress(done, total):
            bar.total = total
            bar.n = done
            bar.refresh()

        try:
            checked, broken, why = audit_chain_verify(on_progress=progress)
        finally:
            bar.close()
        if broken is not None:
            raise CommandError(
                f"audit log broken at entry #{broken.pk} ({broken.created_at:%Y-%m-%d %H:%M:%S} "
                f"{broken.actor_name} {broken.action} {broken.object_repr}): {why}. "
                f"{checked} entries before it are intact."
            )
        self.stdout.write(self.style.SUCCESS(f"Audit log intact: {checked} entries, hash chain verified."))
