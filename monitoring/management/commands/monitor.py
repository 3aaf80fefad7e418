"""manage.py monitor: drift, traffic and accuracy of a model, the scheduled jobs run now, and references.

manage.py monitor drift MODEL [--window 24h] [--version N] [--method auto|psi|...] [--sketch] [--latest] [--json]
manage.py monitor aggregates MODEL [--from ISO] [--to ISO] [--granularity hour|day] [--json]
manage.py monitor run [--job aggregate|drift|all] [--model MODEL]
manage.py monitor references [--model MODEL] [--rebuild]
"""

import datetime as dt
import json

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from core.errors import ApplicationError
from monitoring import selectors, services
from monitoring.models import DriftRun, MonitoringJob
from monitoring.windows import moment_parse, window_parse


def _score(value):
    return "–" if value is None else f"{value:.4g}"


class Command(BaseCommand):
    help = "Drift, traffic and accuracy of a model; run the monitoring jobs now; build drift references."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        drift = actions.add_parser("drift", help="drift of a model's traffic against its training data")
        drift.add_argument("model")
        drift.add_argument("--window", default="24h", help="1h, 24h, 7d, 30d or FROM..TO (default 24h)")
        drift.add_argument("--version", type=int, help="default: the version in production")
        drift.add_argument("--method", default="auto", help="auto (Evidently's default) or one test for all columns")
        drift.add_argument("--sketch", action="store_true", help="from the hourly sketches instead of the raw rows")
        drift.add_argument("--latest", action="store_true", help="show the last stored result, compute nothing")
        drift.add_argument("--json", action="store_true")
        aggregates = actions.add_parser("aggregates", help="traffic, errors, latency and accuracy over time")
        aggregates.add_argument("model")
        aggregates.add_argument("--from", dest="start", help="ISO 8601 (default 24 hours ago)")
        aggregates.add_argument("--to", dest="end", help="ISO 8601 (default now)")
        aggregates.add_argument("--granularity", default="hour", choices=["hour", "day"])
        aggregates.add_argument("--json", action="store_true")
        run = actions.add_parser("run", help="run the scheduled jobs now, in this process")
        run.add_argument("--job", default="all", choices=["aggregate", "drift", "all"])
        run.add_argument("--model", help="default: every monitored model")
        references = actions.add_parser("references", help="build the drift references versions lack")
        references.add_argument("--model")
        references.add_argument("--rebuild", action="store_true", help="rebuild those that exist too")

    def handle(self, *args, **options):
        try:
            getattr(self, f"_{options['action']}")(options)
        except ApplicationError as exc:
            raise CommandError(str(exc)) from None

    def _drift(self, options):
        window = window_parse(options["window"])
        kind = DriftRun.Computation.SKETCH if options["sketch"] else DriftRun.Computation.EXACT
        if options["latest"]:
            run = selectors.drift_run_latest(
                model_name=options["model"], window=window.label, version=options["version"], kind=kind
            )
            if run is None:
                raise CommandError(
                    f"no drift of {options['model']} over {window.label} stored yet; run without --latest"
                )
        else:
            run = services.drift_compute(
                model_name=options["model"],
                window=window,
                version=options["version"],
                method=options["method"],
                kind=kind,
                trigger=DriftRun.Trigger.CLI,
            )
        payload = selectors.drift_run_payload(run)
        if options["json"]:
            self.stdout.write(json.dumps(payload))
        else:
            self._print_drift(payload)
        if run.status == DriftRun.Status.NO_REFERENCE:
            raise CommandError(run.message)

    def _print_drift(self, payload):
        self.stdout.write(
            f"{payload['model']} v{payload['version']}, {payload['window']} ({payload['from']} to {payload['to']}), "
            f"{payload['kind']}: {payload['rows']} rows"
        )
        if payload["status"] != "ok":
            self.stdout.write(payload["message"])
            return
        verdict = "DRIFT" if payload["dataset_drift"] else "no drift"
        self.stdout.write(f"dataset: {verdict} ({payload['share_drifted']:.0%} of features drifted)")
        self.stdout.write(f"{'feature':24s} {'method':14s} {'score':>10s} {'threshold':>9s}  verdict")
        for row in payload["features"] + payload["prediction"]:
            name = row.get("feature") or f"[{row['column']}]"
            verdict = {True: "DRIFT", False: "ok", None: row.get("note", "")}[row["drifted"]]
            self.stdout.write(
                f"{name:24s} {row['method']:14s} {_score(row['score']):>10s} {_score(row['threshold']):>9s}  {verdict}"
            )

    def _aggregates(self, options):
        end = moment_parse(options["end"], field="to") if options["end"] else timezone.now()
        start = moment_parse(options["start"], field="from") if options["start"] else end - dt.timedelta(hours=24)
        points = selectors.monitoring_series(
            model_name=options["model"], start=start, end=end, granularity=options["granularity"]
        )
        accuracy = selectors.accuracy_summary(model_name=options["model"], start=start, end=end)
        if options["json"]:
            self.stdout.write(json.dumps({"points": points, "accuracy": accuracy}))
            return
        self.stdout.write(
            f"{'time':26s} {'v':>3s} {'mode':8s} {'requests':>8s} {'rows':>7s} {'errors':>6s} "
            f"{'p50 ms':>8s} {'p99 ms':>8s} {'conf':>5s} {'acc':>5s} {'est':>5s}"
        )
        for p in points:
            self.stdout.write(
                f"{p['time']:26s} {p['version'] or '-'!s:>3s} {p['mode']:8s} {p['requests']:8d} {p['rows']:7d} "
                f"{p['errors']:6d} {_score(p['latency_ms']['p50']):>8s} {_score(p['latency_ms']['p99']):>8s} "
                f"{_score(p['confidence']['mean']):>5s} {_score(p['accuracy']):>5s} "
                f"{_score(p['estimated_accuracy']):>5s}"
            )
        for row in accuracy:
            self.stdout.write(
                f"v{row['version']}: {row['rows']} rows, {row['labelled']} labelled; accuracy {_score(row['accuracy'])}"
                f" (macro F1 {_score(row['macro_f1'])}), estimated {_score(row['estimated_accuracy'])}, "
                f"validation {_score(row['validation_accuracy'])}"
            )

    def _run(self, options):
        jobs = ["aggregate", "drift"] if options["job"] == "all" else [options["job"]]
        models = [options["model"]] if options["model"] else services.models_to_monitor()
        if not models:
            self.stdout.write("no model to monitor (nothing deployed, nothing logged)")
        for model_name in models:
            for job in jobs:
                try:
                    outcome = services.job_run(job=job, model_name=model_name, trigger=DriftRun.Trigger.CLI)
                except services.JobBusy as exc:
                    self.stdout.write(self.style.WARNING(f"{exc}: skipped"))
                    continue
                label = MonitoringJob.Job(job).label
                self.stdout.write(f"{model_name}: {label}: {json.dumps(outcome.result)}")

    def _references(self, options):
        built = services.drift_references_backfill(model_name=options["model"], rebuild=options["rebuild"])
        for reference in built:
            self.stdout.write(
                f"{reference.version}: reference of {reference.n_rows} rows from {reference.dataset} "
                f"({reference.build_seconds:.2f} s)"
            )
        self.stdout.write(self.style.SUCCESS(f"{len(built)} reference(s) built."))
