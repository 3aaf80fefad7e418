"""manage.py register RUN_ID NAME: register a finished run as the next version of a model."""

from django.core.management.base import BaseCommand, CommandError

from core.cli import add_user_argument, user_resolve
from core.errors import ApplicationError
from registry import services


class Command(BaseCommand):
    help = "Register a finished run as the next version of a model (created if new). Prints the version number."

    def add_arguments(self, parser):
        parser.add_argument("run_id", type=int)
        parser.add_argument("name", help="Registered model name.")
        parser.add_argument("--description", default="")
        add_user_argument(parser, required=False)

    def handle(self, *args, **options):
        by = user_resolve(options["user"], required=False)
        try:
            version = services.model_version_register(
                run_id=options["run_id"], model_name=options["name"], description=options["description"], by=by
            )
        except ApplicationError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(f"Registered run {version.run_id} as {version} (stage None)."))
        self.stdout.write(str(version.version))
