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
        parser.add_argument(
            "--breaking-change",
            action="store_true",
            help="Register it although its features, target or classes differ from the model's (audited).",
        )
        add_user_argument(parser, required=True)

    def handle(self, *args, **options):
        by = user_resolve(options["user"], required=True)
        try:
            version = services.model_version_register(
                run_id=options["run_id"],
                model_name=options["name"],
                description=options["description"],
                by=by,
                breaking_change=options["breaking_change"],
            )
        except ApplicationError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(f"Registered run {version.run_id} as {version} (stage None)."))
        self.stdout.write(str(version.version))
