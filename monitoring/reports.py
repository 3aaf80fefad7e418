"""The specification's two reports, read with the reader's permission checked: an experiment summary (runs
per experiment, finished and failed, the best run per metric) and a deployment report (each model's version
per environment and mode, since when, approved by whom, its traffic and live accuracy over the period).

Each report is a `Report`: rows as JSON shows them, and `csv_rows` flattened for a spreadsheet. The admin,
the API (`/api/v1/reports/<kind>?since=...&format=csv`) and `manage.py report` all call `report_build`.
"""

import datetime as dt
import re
from collections import defaultdict
from dataclasses import dataclass, field

from django.db.models import Q
from django.utils import timezone

from core.errors import InvalidInput
from core.metrics import lower_is_better
from core.permissions import permission_require
from experiments.models import Experiment, Run
from monitoring.dashboards import Reader
from monitoring.models import HourlyAggregate
from monitoring.selectors import _Bucket
from monitoring.windows import moment_parse
from registry.models import ModelVersion, PromotionRequest
from serving.models import Deployment

DEFAULT_SINCE = dt.timedelta(days=30)
_DURATION = re.compile(r"^(\d+)\s*([hdw])$")
_UNITS = {"h": "hours", "d": "days", "w": "weeks"}
# A primary follows an approved stage change; the deployment is made in the approval's transaction.
_APPROVAL_SLACK = dt.timedelta(minutes=1)
_STAGE_OF_ENVIRONMENT = {"production": ModelVersion.Stage.PRODUCTION, "staging": ModelVersion.Stage.STAGING}


DEPLOYMENT_COLUMNS = [
    "model",
    "environment",
    "mode",
    "version",
    "status",
    "traffic_percent",
    "since",
    "until",
    "promotion_request",
    "requested_by",
    "approved_by",
    "approved_at",
    "requests",
    "rows",
    "errors",
    "error_rate",
    "latency_p95_ms",
    "labelled",
    "live_accuracy",
    "estimated_accuracy",
    "validation_accuracy",
]


class ReportKind:
    EXPERIMENTS = "experiments"
    DEPLOYMENTS = "deployments"
    ALL = (EXPERIMENTS, DEPLOYMENTS)


@dataclass(frozen=True)
class Report:
    kind: str
    since: dt.datetime
    generated_at: dt.datetime
    rows: list
    csv_columns: list = field(default_factory=list)
    table_columns: list = field(default_factory=list)  # the few a terminal or the admin shows

    def as_dict(self) -> dict:
        return {
            "report": self.kind,
            "since": self.since.isoformat(),
            "generated_at": self.generated_at.isoformat(),
            "rows": self.rows,
        }

    def csv_rows(self, columns: list[str] | None = None) -> list[dict]:
        """The rows flattened for CSV: nested values become one text cell each."""
        flat = []
        for row in self.rows:
            cells = {}
            for column in columns or self.csv_columns:
                value = row.get(column)
                if isinstance(value, dict):
                    value = "; ".join(f"{key}: {_cell(item)}" for key, item in value.items())
                cells[column] = "" if value is None else value
            flat.append(cells)
        return flat


def _cell(value):
    if isinstance(value, dict):  # a best run: "#12 (name) 0.9667"
        number = value.get("value")
        shown = f"{number:.4g}" if isinstance(number, float) else number
        return f"#{value.get('run')} ({value.get('name')}) {shown}"
    return value


def cell_text(value: object) -> str:
    """A report cell as a table shows it: numbers to four figures, moments to the minute, nothing as –."""
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str) and len(value) > 19 and value[10:11] == "T":
        return value[:16].replace("T", " ")
    return str(value)


def since_parse(text: str | None, *, now: dt.datetime | None = None) -> dt.datetime:
    """`--since`: a duration back from now (24h, 7d, 2w) or a date or moment (ISO 8601); default 30 days."""
    now = now or timezone.now()
    if text in (None, ""):
        return now - DEFAULT_SINCE
    match = _DURATION.match(str(text).strip().lower())
    if match:
        return now - dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    moment = moment_parse(str(text).strip(), field="since")
    if moment > now:
        raise InvalidInput("must be in the past", field="since")
    return moment


def experiment_report(*, by: Reader, since: dt.datetime) -> Report:
    """Per experiment, the runs created since `since`: how many, finished, failed, and the best run of each
    metric (largest, or smallest for losses and times) among the finished ones."""
    permission_require(by, "experiments.view_run", doing="read the experiment report")
    runs = Run.objects.filter(created_at__gte=since).values(
        "id", "name", "experiment_id", "status", "latest_metrics", "algorithm"
    )
    per_experiment = defaultdict(list)
    for run in runs:
        per_experiment[run["experiment_id"]].append(run)
    names = dict(Experiment.objects.filter(id__in=list(per_experiment)).values_list("id", "name"))
    rows = []
    for experiment_id, members in sorted(per_experiment.items(), key=lambda item: names[item[0]]):
        counts = defaultdict(int)
        best = {}
        for run in members:
            counts[run["status"]] += 1
            if run["status"] != Run.Status.FINISHED:
                continue
            for metric, value in (run["latest_metrics"] or {}).items():
                if not isinstance(value, int | float):
                    continue
                current = best.get(metric)
                if current is None or (
                    value < current["value"] if lower_is_better(metric) else value > current["value"]
                ):
                    best[metric] = {"run": run["id"], "name": run["name"], "value": value}
        rows.append(
            {
                "experiment": names[experiment_id],
                "runs": len(members),
                "finished": counts[Run.Status.FINISHED],
                "failed": counts[Run.Status.FAILED],
                "killed": counts[Run.Status.KILLED],
                "in_progress": counts[Run.Status.QUEUED] + counts[Run.Status.RUNNING],
                "best": dict(sorted(best.items())),
            }
        )
    return Report(
        kind=ReportKind.EXPERIMENTS,
        since=since,
        generated_at=timezone.now(),
        rows=rows,
        csv_columns=["experiment", "runs", "finished", "failed", "killed", "in_progress", "best"],
        table_columns=["experiment", "runs", "finished", "failed", "killed", "in_progress", "best"],
    )


def _approval(deployment, approvals):
    """The approved request that put this deployment on traffic: the latest decided before it was made."""
    if deployment.mode == Deployment.Mode.PRIMARY:
        stage = _STAGE_OF_ENVIRONMENT.get(deployment.environment)
        matching = [r for r in approvals[deployment.version_id] if r.to_stage == stage]
    else:
        matching = [
            r
            for r in approvals[deployment.version_id]
            if r.kind == deployment.mode and r.environment == deployment.environment
        ]
    before = [r for r in matching if r.decided_at <= deployment.created_at + _APPROVAL_SLACK]
    return max(before, key=lambda r: r.decided_at, default=None)


def deployment_report(*, by: Reader, since: dt.datetime) -> Report:
    """Each model's deployments active at any moment since `since`: version per environment and mode, since
    when (and until when), requested and approved by whom, and its traffic and accuracy over the period."""
    permission_require(by, "serving.view_deployment", doing="read the deployment report")
    deployments = list(
        Deployment.objects.filter(Q(status=Deployment.Status.ACTIVE) | Q(retired_at__gte=since))
        .select_related("model", "version", "created_by")
        .order_by("model__name", "environment", "mode", "-created_at")
    )
    approvals = defaultdict(list)
    requests = PromotionRequest.objects.filter(
        version__in={d.version_id for d in deployments}, status=PromotionRequest.Status.APPROVED
    ).select_related("requested_by", "decided_by")
    for request in requests:
        approvals[request.version_id].append(request)
    hours = defaultdict(list)
    aggregates = HourlyAggregate.objects.filter(
        model_name__in={d.model.name for d in deployments}, hour__gte=since - dt.timedelta(hours=1)
    )
    for hour in aggregates:
        hours[(hour.model_name, hour.version, hour.deployment_mode)].append(hour)
    rows = []
    for deployment in deployments:
        # The hours of its version and mode while it was deployed, within the period.
        start = max(since, deployment.created_at)
        first_hour = start.replace(minute=0, second=0, microsecond=0)
        end = deployment.retired_at
        served = [
            h
            for h in hours[(deployment.model.name, deployment.version.version, deployment.mode)]
            if h.hour >= first_hour and (end is None or h.hour < end)
        ]
        bucket = _Bucket(start, deployment.version.version, deployment.mode)
        bucket.hours = served
        numbers = bucket.payload("day")
        approval = _approval(deployment, approvals)
        rows.append(
            {
                "model": deployment.model.name,
                "environment": deployment.environment,
                "mode": deployment.mode,
                "version": deployment.version.version,
                "status": deployment.status,
                "traffic_percent": deployment.traffic_percent,
                "since": deployment.created_at.isoformat(),
                "until": deployment.retired_at.isoformat() if deployment.retired_at else None,
                "promotion_request": approval.pk if approval else None,
                "requested_by": approval.requested_by.get_username() if approval else None,
                "approved_by": approval.decided_by.get_username() if approval and approval.decided_by else None,
                "approved_at": approval.decided_at.isoformat() if approval else None,
                "requests": numbers["requests"],
                "rows": numbers["rows"],
                "errors": numbers["errors"],
                "error_rate": numbers["error_rate"],
                "latency_p95_ms": numbers["latency_ms"]["p95"],
                "labelled": numbers["labelled"],
                "live_accuracy": numbers["accuracy"],
                "estimated_accuracy": numbers["estimated_accuracy"],
                "validation_accuracy": (deployment.version.metrics or {}).get("accuracy"),
            }
        )
    return Report(
        kind=ReportKind.DEPLOYMENTS,
        since=since,
        generated_at=timezone.now(),
        rows=rows,
        csv_columns=DEPLOYMENT_COLUMNS,
        table_columns=[
            "model",
            "environment",
            "mode",
            "version",
            "traffic_percent",
            "since",
            "approved_by",
            "requests",
            "error_rate",
            "latency_p95_ms",
            "live_accuracy",
            "estimated_accuracy",
        ],
    )


def report_build(*, kind: str, by: Reader, since: dt.datetime) -> Report:
    """The report named `kind` (experiments or deployments) since `since`, as `by` may read it."""
    if kind == ReportKind.EXPERIMENTS:
        return experiment_report(by=by, since=since)
    if kind == ReportKind.DEPLOYMENTS:
        return deployment_report(by=by, since=since)
    raise InvalidInput(f"must be one of {', '.join(ReportKind.ALL)}", field="report")
