"""manage.py request_promotion NAME VERSION --to production --reason ...: ask for a stage change."""

from django.core.management.base import BaseCommand, CommandError

from core.cli import add_user_argument, user_resolve
from core.errors import ApplicationError
from registry import selectors, services
from registry.services.promotion import _STAGE_NAMES


class Command(BaseCommand):
    help = "Request that a model version move to a stage; another user approves it. Prints the request id."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("version", type=int)
        parser.add_argument("--to", dest="to_stage", required=True, choices=sorted(_STAGE_NAMES))
        parser.add_argument("--reason", required=True)
        add_user_argument(parser, required=True)

    def handle(self, *args, **options):
        by = user_resolve(options["user"], required=True)
        try:
            version = selectors.version_get(model_name=options["name"], version=options["version"])
            request = services.promotion_request_create(
                version=version, to_stage=options["to_stage"], reason=options["reason"], by=by
            )
        except ApplicationError as exc:
            raise CommandError(str(exc)) from None
        evaluation = request.compliance
        self.stdout.write(
            f"Request #{request.pk}: {version} → {request.to_stage}, pending approval by another user. "
            f"Compliance: {'compliant' if evaluation.compliant else 'NOT compliant'} ({evaluation.score:.0f}%)."
        )
        for result in evaluation.results:
            mark = "ok  " if result["passed"] else "FAIL"
            details = "; ".join(check["detail"] for check in result["checks"])
            self.stdout.write(f"  {mark} {result['policy']}: {details}")
        self.stdout.write(str(request.pk))
