"""manage.py request_traffic NAME VERSION --mode canary --percent 10 --reason ...: ask for a canary or shadow."""

from django.core.management.base import BaseCommand, CommandError

from core.cli import add_user_argument, user_resolve
from core.errors import ApplicationError
from registry import selectors, services


class Command(BaseCommand):
    help = (
        "Request that a version take a canary share (or a shadow copy) of an environment's traffic; another "
        "user approves it with approve_promotion. Prints the request id."
    )

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("version", type=int)
        parser.add_argument("--mode", required=True, choices=["canary", "shadow"])
        parser.add_argument("--percent", type=float, help="Canary: the share of requests it answers (0-100].")
        parser.add_argument("--environment", default="production", choices=["production", "staging"])
        parser.add_argument("--reason", required=True)
        add_user_argument(parser, required=True)

    def handle(self, *args, **options):
        by = user_resolve(options["user"], required=True)
        try:
            version = selectors.version_get(model_name=options["name"], version=options["version"])
            request = services.traffic_request_create(
                version=version,
                mode=options["mode"],
                environment=options["environment"],
                traffic_percent=options["percent"],
                reason=options["reason"],
                by=by,
            )
        except ApplicationError as exc:
            raise CommandError(str(exc)) from None
        evaluation = request.compliance
        self.stdout.write(
            f"Request #{request.pk}: {version} as {request.target}, pending approval by another user. "
            f"Compliance: {'compliant' if evaluation.compliant else 'NOT compliant'} ({evaluation.score:.0f}%)."
        )
        self.stdout.write(str(request.pk))
