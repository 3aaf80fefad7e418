"""manage.py reject_promotion REQUEST_ID --comment ... --user U: reject someone else's promotion request."""

from django.core.management.base import BaseCommand, CommandError

from core.cli import add_user_argument, user_resolve
from core.errors import ApplicationError
from registry import services


class Command(BaseCommand):
    help = "Reject a pending promotion request (not your own), saying why."

    def add_arguments(self, parser):
        parser.add_argument("request_id", type=int)
        parser.add_argument("--comment", required=True)
        add_user_argument(parser, required=True)

    def handle(self, *args, **options):
        by = user_resolve(options["user"], required=True)
        try:
            request = services.promotion_request_reject(
                request_id=options["request_id"], by=by, comment=options["comment"]
            )
        except ApplicationError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Rejected #{request.pk}: {request.version} stays in {request.version.stage}.")
