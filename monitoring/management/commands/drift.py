"""manage.py drift --reference NAME[@sha] --current NAME[@sha]: drift between two datasets, as Evidently computes it."""

import json

from django.core.management.base import BaseCommand, CommandError

from core.errors import ApplicationError
from monitoring import services
from monitoring.stattests import Method


class Command(BaseCommand):
    help = (
        "Drift of every column but the target between two dataset versions (built-in names, uploaded names, "
        "NAME@sha256-prefix), with Evidently 0.7's tests. Exit 0 either way; --json prints one object."
    )

    def add_arguments(self, parser):
        parser.add_argument("--reference", required=True)
        parser.add_argument("--current", required=True)
        parser.add_argument("--method", default="auto", choices=[m.value for m in Method])
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **options):
        try:
            result = services.datasets_drift(
                reference=options["reference"], current=options["current"], method=options["method"]
            )
        except ApplicationError as exc:
            raise CommandError(str(exc)) from None
        if options["json"]:
            self.stdout.write(json.dumps(result.as_dict()))
            return
        verdict = "DRIFT" if result.dataset_drift else "no drift"
        self.stdout.write(
            f"{result.current} against {result.reference}: {verdict} ({result.share_drifted:.0%} of columns)"
        )
        for row in result.features:
            score = "–" if row["score"] is None else f"{row['score']:.4g}"
            state = {True: "DRIFT", False: "ok", None: row.get("note", "")}[row["drifted"]]
            self.stdout.write(
                f"{row['feature']:24s} {row['method']:14s} {score:>10s} {row['threshold'] or 0:>6g}  {state}"
            )
