"""manage.py train: launch a training run or a sweep, in this process with a progress bar or on the workers."""

import logging

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from core.cli import add_user_argument, user_resolve
from core.errors import ApplicationError
from experiments import services
from experiments.models import Run
from experiments.selectors import MAIN_METRICS
from experiments.signals import run_progress
from experiments.trainers import TRAINERS
from registry.services import model_version_register


def _key_value(text):
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(text)
    return key.strip(), value.strip()


class Command(BaseCommand):
    help = "Train a model on a dataset. Prints the run id on the last line."

    def add_arguments(self, parser):
        parser.add_argument("--experiment", required=True, help="Experiment name (created if new).")
        parser.add_argument(
            "--dataset",
            required=True,
            help="Built-in name (iris, wine, breast_cancer, "
            "customer_churn), an uploaded dataset's name, or a sha256 prefix.",
        )
        parser.add_argument("--algorithm", required=True, choices=sorted(TRAINERS))
        parser.add_argument(
            "--param",
            action="append",
            default=[],
            type=_key_value,
            metavar="NAME=VALUE",
            help="A hyperparameter; repeat for several.",
        )
        parser.add_argument(
            "--n-samples", "--n_samples", dest="n_samples", type=int, help="Rows of customer_churn to make."
        )
        parser.add_argument("--seed", type=int, help="Seed of customer_churn.")
        parser.add_argument(
            "--c-param", "--c_param", dest="c_param", help="Shorthand for --param C=VALUE (logistic_regression)."
        )
        parser.add_argument("--sweep", help='A grid: "n_estimators=50,100;max_depth=3,5" runs every combination.')
        parser.add_argument("--sweep-metric", default="accuracy", help="Metric that picks the sweep's best run.")
        parser.add_argument("--name", default="", help="Run name.")
        parser.add_argument("--queue", action="store_true", help="Send to the Celery workers and return at once.")
        parser.add_argument(
            "--register",
            metavar="MODEL",
            help="Once the run finishes, register it (a sweep: its best run) as the next version of MODEL.",
        )
        add_user_argument(parser, required=True)

    def handle(self, *args, **options):
        # The in-process task's "Task ... succeeded" line would break the progress bar.
        logging.getLogger("celery.app.trace").setLevel(logging.WARNING)
        params = dict(options["param"])
        if options["c_param"] is not None:
            if "C" in params:
                raise CommandError("give C once: either --c_param or --param C=...")
            params["C"] = options["c_param"]
        if options["register"] and options["queue"]:
            raise CommandError(
                "--register needs the finished run: drop --queue, or register later with manage.py register"
            )
        by = user_resolve(options["user"], required=True)
        bar = None if options["queue"] else _ProgressBar(self.stderr)
        try:
            sweep = services.sweep_grid_parse(options["sweep"]) if options["sweep"] else None
            if bar:
                run_progress.connect(bar.update, sender=Run)
            run = services.run_launch(
                experiment=options["experiment"],
                dataset=options["dataset"],
                algorithm=options["algorithm"],
                params=params,
                sweep=sweep,
                sweep_metric=options["sweep_metric"],
                n_samples=options["n_samples"],
                seed=options["seed"],
                name=options["name"],
                by=by,
                inline=not options["queue"],
            )
        except ApplicationError as exc:
            raise CommandError(str(exc)) from None
        finally:
            if bar:
                run_progress.disconnect(bar.update, sender=Run)
                bar.close()
        if options["queue"]:
            children = run.children.count()
            self.stdout.write(
                f"Queued run {run.pk}"
                + (f" with {children} sweep runs" if children else "")
                + f" in experiment {run.experiment.name!r}."
            )
        else:
            self._report(run)
        if not options["queue"] and run.status != Run.Status.FINISHED:
            self.stdout.write(str(run.pk))
            raise CommandError(f"run {run.pk} {run.status.lower()}: {run.error.splitlines()[0] if run.error else ''}")
        if options["register"]:
            self._register(run, options["register"], by)
        self.stdout.write(str(run.pk))

    def _register(self, run, model_name, by):
        target = run.best_child if run.is_sweep else run
        if target is None:
            raise CommandError(f"sweep {run.pk} has no finished run to register")
        try:
            version = model_version_register(run_id=target.pk, model_name=model_name, by=by)
        except ApplicationError as exc:
            raise CommandError(f"run {run.pk} finished but was not registered: {exc}") from None
        self.stdout.write(self.style.SUCCESS(f"Registered run {target.pk} as {version} (stage None)."))

    def _report(self, run):
        style = self.style.SUCCESS if run.status == Run.Status.FINISHED else self.style.ERROR
        self.stdout.write(style(f"Run {run.pk} {run.status} in experiment {run.experiment.name!r}"))
        for child in run.children.order_by("id"):
            marker = " *best*" if child.pk == run.best_child_id else ""
            value = child.latest_metrics.get(run.sweep_metric)
            shown = f"{value:.4f}" if value is not None else child.status
            self.stdout.write(f"  run {child.pk:>5}  {run.sweep_metric}={shown}  {child.name}{marker}")
        for key in MAIN_METRICS:
            if key in run.latest_metrics:
                self.stdout.write(f"  {key:<16} {run.latest_metrics[key]:.4f}")
        if run.mlflow_run_id:
            synced = "mirrored" if run.mlflow_synced else f"not yet mirrored ({run.mlflow_sync_error[:80]})"
            self.stdout.write(f"  MLflow run {run.mlflow_run_id} ({synced})")


class _ProgressBar:
    """One bar for the whole launch; a sweep's share is the mean progress of its runs."""

    def __init__(self, stream):
        self.stream = stream
        self.fractions = {}
        self.bar = None  # drawn at the first progress report, so a refused launch draws none

    def update(self, sender, run_id, fraction, message, **kwargs):
        if self.bar is None:
            self.bar = tqdm(total=100, file=self.stream._out, bar_format="{l_bar}{bar}| {elapsed} {postfix}")
        run = Run.objects.filter(pk=run_id).only("parent_id").first()
        if run and run.parent_id and not self.fractions.get("total"):
            self.fractions["total"] = Run.objects.filter(parent_id=run.parent_id).count()
        self.fractions[run_id] = fraction
        total = self.fractions.get("total") or 1
        done = sum(v for k, v in self.fractions.items() if k != "total") / total
        self.bar.n = round(min(done, 1.0) * 100, 1)
        self.bar.set_postfix_str(f"run {run_id}: {message}", refresh=False)
        self.bar.refresh()

    def close(self):
        if self.bar is not None:
            self.bar.close()
