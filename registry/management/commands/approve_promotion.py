"""manage.py approve_promotion REQUEST_ID --user U: approve someone else's promotion request."""

from django.core.management.base import BaseCommand, CommandError

from core.cli import add_user_argument, user_resolve
from core.errors import ApplicationError
from registry import services


class Command(BaseCommand):
    help = "Approve a pending promotion request (not your own); the version moves to its target stage."

    def add_arguments(self, parser):
        parser.add_argument("request_id", type=int)
        parser.add_argument("--comment", default="")
        parser.add_argument(
            "--override-justification",
            default="",
            help="Needed (with the override_compliance permission) to put a non-compliant version in Production.",
        )
        add_user_argument(parser, required=True)

    def handle(self, *args, **options):
        by = user_resolve(options["user"], required=True)
        try:
            request = services.promotion_request_approve(
                request_id=options["request_id"],
                by=by,
                comment=options["comment"],
                override_justification=options["override_justification"],
            )
        except ApplicationError as exc:
            raise CommandError(str(exc)) from None
        override = " (compliance overridden)" if request.override_justification else ""
        now = f"answers as {request.target}" if request.is_traffic else f"is now in {request.to_stage}"
        self.stdout.write(self.style.SUCCESS(f"Approved #{request.pk}: {request.version} {now}{override}."))
