"""manage.py rollback NAME --reason ... --user U [--emergency]: put the previous production version back."""

from django.core.management.base import BaseCommand, CommandError

from core.cli import add_user_argument, user_resolve
from core.errors import ApplicationError
from registry import services


class Command(BaseCommand):
    help = (
        "Roll production back to the version that was there before: a request another approver decides, "
        "or at once with --emergency (needs the emergency_rollback permission)."
    )

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--reason", required=True)
        parser.add_argument("--emergency", action="store_true")
        add_user_argument(parser, required=True)

    def handle(self, *args, **options):
        by = user_resolve(options["user"], required=True)
        try:
            result = services.production_rollback(
                model_name=options["name"], by=by, reason=options["reason"], emergency=options["emergency"]
            )
        except ApplicationError as exc:
            raise CommandError(str(exc)) from None
        if options["emergency"]:
            self.stdout.write(self.style.SUCCESS(f"Rolled back: {result} is in Production again."))
        else:
            self.stdout.write(f"Rollback request #{result.pk}: {result.version} → Production, pending approval.")
            self.stdout.write(str(result.pk))
