"""manage.py import_mlflow: bring the experiments and runs of an existing MLflow store in."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from core.cli import add_user_argument, user_resolve
from core.errors import ApplicationError
from experiments import services


class Command(BaseCommand):
    help = "Import experiments and runs from an MLflow tracking store. Importing twice creates nothing new."

    def add_arguments(self, parser):
        parser.add_argument("--tracking-uri", help="Default: MLFLOW_TRACKING_URI.")
        add_user_argument(parser, required=True)

    def handle(self, *args, **options):
        uri = options["tracking_uri"] or settings.MLFLOW_TRACKING_URI
        by = user_resolve(options["user"], required=True)
        bar = tqdm(total=0, file=self.stderr._out, unit="run", desc="importing")

        def progress(done, total):
            bar.total = total
            bar.n = done
            bar.refresh()

        try:
            counts = services.mlflow_import(tracking_uri=uri, by=by, on_progress=progress)
        except ApplicationError as exc:
            raise CommandError(str(exc)) from None
        except Exception as exc:  # the store is unreachable or not an MLflow store
            raise CommandError(f"cannot read the MLflow store at {uri}: {type(exc).__name__}: {exc}") from None
        finally:
            bar.close()
        self.stdout.write(
            self.style.SUCCESS(
                f"Imported {counts['runs']} runs and {counts['experiments']} new experiments from {uri}; "
                f"{counts['skipped']} runs were already here."
            )
        )
