"""manage.py crm_refresh: refresh customers' segments in the CRM, here with a progress bar or on the workers."""

import logging

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from core.cli import add_user_argument, user_resolve
from core.errors import ApplicationError
from serving.crm import services
from serving.crm.models import CrmRefresh


class Command(BaseCommand):
    help = (
        "Predict the segments of the customers changed since the last refresh (--all: every customer) and "
        "write the ones that changed back to the CRM. Prints the refresh id on the last line."
    )

    def add_arguments(self, parser):
        parser.add_argument("--all", action="store_true", help="Every customer, not only those changed since.")
        parser.add_argument("--queue", action="store_true", help="Hand it to the Celery workers and return at once.")
        parser.add_argument("--resume", type=int, metavar="ID", help="Go on with a stopped or failed refresh.")
        parser.add_argument("--stop", type=int, metavar="ID", help="Stop a running refresh after its current chunk.")
        add_user_argument(parser, required=True)

    def handle(self, *args, **options):
        by = user_resolve(options["user"], required=True)
        # One line per segment written goes to the log; the bar is what a person at a terminal wants.
        if not options["queue"]:
            logging.getLogger("serving.crm").setLevel(logging.WARNING)
        bar = None if options["queue"] or options["stop"] else _ProgressBar(self.stderr)
        try:
            if options["stop"]:
                refresh = services.crm_refresh_stop(refresh_id=options["stop"], by=by, reason="manage.py crm_refresh")
            elif options["resume"]:
                refresh = services.crm_refresh_resume(
                    refresh_id=options["resume"], by=by, inline=not options["queue"], on_progress=bar
                )
            else:
                refresh = services.crm_refresh_start(
                    scope=CrmRefresh.Scope.ALL if options["all"] else CrmRefresh.Scope.CHANGED,
                    by=by,
                    inline=not options["queue"],
                    on_progress=bar,
                )
        except ApplicationError as exc:
            raise CommandError(str(exc)) from None
        finally:
            if bar:
                bar.close()
        if options["queue"] or options["stop"]:
            self.stdout.write(f"Refresh #{refresh.pk} is {refresh.status} ({refresh.scope_note}).")
        else:
            self._report(refresh)
        self.stdout.write(str(refresh.pk))
        if refresh.status == CrmRefresh.Status.FAILED:
            raise CommandError(f"refresh {refresh.pk} failed: {refresh.error}")

    def _report(self, refresh):
        style = self.style.SUCCESS if refresh.status == CrmRefresh.Status.FINISHED else self.style.ERROR
        self.stdout.write(style(f"Refresh #{refresh.pk} {refresh.status}: {refresh.scope_note}"))
        seconds = (
            (refresh.finished_at - refresh.started_at).total_seconds()
            if refresh.finished_at and refresh.started_at
            else None
        )
        self.stdout.write(
            f"  {refresh.processed:,} customers: {refresh.updated:,} updated, {refresh.unchanged:,} unchanged, "
            f"{refresh.failed:,} failed" + (f" in {seconds:.1f} s" if seconds is not None else "")
        )
        for failure in refresh.failures[:5]:
            self.stdout.write(f"  {failure['customer_id']}: {failure['error']}")


class _ProgressBar:
    """Called by the service after every chunk with the refresh as it stands."""

    def __init__(self, stream):
        self.stream = stream
        self.bar = None

    def __call__(self, refresh):
        if self.bar is None:
            self.bar = tqdm(total=refresh.total, file=self.stream, unit="customer", initial=0, dynamic_ncols=True)
        self.bar.set_postfix(updated=refresh.updated, failed=refresh.failed, refresh=False)
        self.bar.update(refresh.processed - self.bar.n)

    def close(self):
        if self.bar is not None:
            self.bar.close()
