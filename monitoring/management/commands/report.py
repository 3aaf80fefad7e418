"""manage.py report experiments|deployments [--since 7d|2026-01-01] [--format table|csv|json] --user NAME

The specification's experiment and deployment reports, read as the named user (their role decides).
"""

import csv
import json

from django.core.management.base import BaseCommand, CommandError

from core.cli import add_user_argument, user_resolve
from core.errors import ApplicationError
from monitoring.reports import ReportKind, cell_text, report_build, since_parse


class Command(BaseCommand):
    help = "The experiment summary or the deployment report, as a table, CSV or JSON."

    def add_arguments(self, parser):
        parser.add_argument("report", choices=ReportKind.ALL)
        parser.add_argument("--since", help="24h, 7d, 2w or an ISO 8601 date (default: 30 days ago)")
        parser.add_argument("--format", default="table", choices=["table", "csv", "json"])
        add_user_argument(parser, required=True)

    def handle(self, *args, **options):
        user = user_resolve(options["user"], required=True)
        try:
            report = report_build(kind=options["report"], by=user, since=since_parse(options["since"]))
        except ApplicationError as exc:
            raise CommandError(str(exc)) from None
        if options["format"] == "json":
            self.stdout.write(json.dumps(report.as_dict(), indent=2))
        elif options["format"] == "csv":
            writer = csv.DictWriter(self.stdout, fieldnames=report.csv_columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(report.csv_rows())
        else:
            self._table(report)

    def _table(self, report):
        self.stdout.write(f"{report.kind} report since {report.since:%Y-%m-%d %H:%M} UTC")
        columns = report.table_columns
        rows = report.csv_rows(columns)
        if not rows:
            self.stdout.write("(nothing in this period)")
            return
        cells = [[cell_text(row[column]) for column in columns] for row in rows]
        widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]
        self.stdout.write("  ".join(column.ljust(width) for column, width in zip(columns, widths, strict=True)))
        for line in cells:
            self.stdout.write("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
