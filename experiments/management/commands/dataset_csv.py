"""manage.py dataset_csv: write a built-in dataset as CSV, e.g. a sample to try the upload with."""

from django.core.management.base import BaseCommand, CommandError

from core.errors import ApplicationError
from experiments import datasets


class Command(BaseCommand):
    help = "Write a built-in dataset (iris, wine, breast_cancer, customer_churn) as CSV to stdout or --output."

    def add_arguments(self, parser):
        parser.add_argument("name", help=", ".join(datasets.BUILTIN_DATASETS))
        parser.add_argument("--n-samples", type=int, help="customer_churn only (default 2000)")
        parser.add_argument("--seed", type=int, help="customer_churn only (default 42)")
        parser.add_argument("--output", "-o", help="a file to write; default: stdout")

    def handle(self, *args, **options):
        try:
            frame, target, _ = datasets.builtin_frame(
                options["name"], n_samples=options["n_samples"], seed=options["seed"]
            )
        except ApplicationError as exc:
            raise CommandError(str(exc)) from None
        content = datasets.frame_to_csv_bytes(frame)
        if options["output"]:
            with open(options["output"], "wb") as output:
                output.write(content)
            self.stderr.write(f"Wrote {len(frame):,} rows to {options['output']} (target column {target!r}).")
        else:
            self.stdout.write(content.decode(), ending="")
