"""Monitoring's reads for the dashboards: the fleet's health at a glance and one model's page over a range.

Everything comes from what the monitoring jobs stored (hourly aggregates, feature sketches, drift runs,
references) and the deployments serving has now; nothing here reads the raw prediction log.
"""

import datetime as dt
import math
from collections import defaultdict
from dataclasses import dataclass, field

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db.models import Max

from core.permissions import permission_require
from monitoring.models import DriftReference, DriftResult, DriftRun, FeatureSketch, HourlyAggregate, ReferenceColumn
from monitoring.selectors import _Bucket, accuracy_summary, alerts_firing, model_require, monitoring_series
from monitoring.services.drift import sketches_merge
from monitoring.stattests import RULES, Kind
from serving.models import Deployment

# Who reads: a user, or nobody signed in (refused).
Reader = AbstractBaseUser | AnonymousUser | None

# The specification's rules for "unhealthy" (the alerting rules use the same numbers): an error rate
# above 10 % of at least MIN_REQUESTS requests, live or estimated accuracy more than 0.05 below the
# version's validation accuracy (live only on at least MIN_LABELLED labelled rows), dataset drift.
ERROR_RATE_LIMIT = 0.10
ACCURACY_DROP_LIMIT = 0.05
MIN_REQUESTS = 20
MIN_LABELLED = 30
# Longer ranges are shown per day, shorter per hour.
DAILY_FROM_HOURS = 72
HEATMAP_COLUMNS = 48


def _can_read(by):
    permission_require(by, "registry.view_modelversion", doing="read monitoring")


@dataclass(frozen=True)
class DeployedVersion:
    environment: str
    mode: str
    version: int
    traffic_percent: float
    since: dt.datetime


@dataclass(frozen=True)
class DriftStatus:
    version: int
    status: str
    dataset_drift: bool | None
    n_drifted: int
    n_columns: int
    window: str
    computed_at: dt.datetime
    run_id: int


class Health:
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    NO_TRAFFIC = "no traffic"


@dataclass(frozen=True)
class ModelHealth:
    """One deployed model's health over the range: its production primary's numbers, and what else serves."""

    name: str
    version: int | None
    deployments: list
    requests: int
    errors: int
    error_rate: float | None
    latency_p95_ms: float | None
    labelled: int
    accuracy: float | None
    estimated_accuracy: float | None
    validation_accuracy: float | None
    drift: DriftStatus | None
    hourly_requests: list
    problems: list = field(default_factory=list)
    firing: list = field(default_factory=list)  # the model's alerts firing now (monitoring.models.Alert)

    @property
    def status(self):
        if self.problems:
            return Health.UNHEALTHY
        return Health.HEALTHY if self.requests else Health.NO_TRAFFIC

    @property
    def canary(self):
        return [d for d in self.deployments if d.mode == Deployment.Mode.CANARY]

    @property
    def shadow(self):
        return [d for d in self.deployments if d.mode == Deployment.Mode.SHADOW]


def _problems(*, error_rate, requests, accuracy, labelled, estimated, validation, drift):
    problems = []
    if error_rate is not None and requests >= MIN_REQUESTS and error_rate > ERROR_RATE_LIMIT:
        problems.append(f"error rate {error_rate:.1%} > {ERROR_RATE_LIMIT:.0%}")
    if validation is not None:
        if accuracy is not None and labelled >= MIN_LABELLED and accuracy < validation - ACCURACY_DROP_LIMIT:
            problems.append(f"live accuracy {accuracy:.3f} < validation {validation:.3f} − {ACCURACY_DROP_LIMIT}")
        if estimated is not None and estimated < validation - ACCURACY_DROP_LIMIT:
            problems.append(f"estimated accuracy {estimated:.3f} < validation {validation:.3f} − {ACCURACY_DROP_LIMIT}")
    if drift is not None and drift.dataset_drift:
        problems.append(f"data drift: {drift.n_drifted} of {drift.n_columns} columns")
    return problems


def _validation_accuracies(keys):
    """{(model name, version): validation accuracy} from the references, else the version's metrics."""
    names = {name for name, _ in keys}
    found = {}
    references = DriftReference.objects.filter(version__model__name__in=names).select_related("version__model")
    for reference in references:
        version = reference.version
        value = reference.validation_accuracy
        found[(version.model.name, version.version)] = (
            value if value is not None else (version.metrics or {}).get("accuracy")
        )
    return found


def _latest_drift(keys):
    """{(model name, version): its latest drift run's status}, in two queries whatever the fleet's size."""
    names = {name for name, _ in keys}
    latest = (
        DriftRun.objects.filter(model_name__in=names)
        .values("model_name", "version")
        .annotate(last=Max("id"))
        .values_list("last", flat=True)
    )
    found = {}
    for run in DriftRun.objects.filter(id__in=list(latest)):
        if (run.model_name, run.version) in keys:
            found[(run.model_name, run.version)] = DriftStatus(
                version=run.version,
                status=run.status,
                dataset_drift=run.dataset_drift,
                n_drifted=run.n_drifted,
                n_columns=run.n_columns,
                window=run.window,
                computed_at=run.computed_at,
                run_id=run.pk,
            )
    return found


def _hour_slots(start, end):
    first = start.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    slots, moment = [], first
    while moment < end:
        slots.append(moment)
        moment += dt.timedelta(hours=1)
    return slots


def fleet_overview(*, by: Reader, start: dt.datetime, end: dt.datetime) -> list[ModelHealth]:
    """Every deployed model's health over [start, end): traffic, errors, p95 latency, accuracy (live and
    estimated) against validation, its latest drift, and the canaries and shadows beside its primary."""
    _can_read(by)
    deployments = defaultdict(list)
    for deployment in Deployment.objects.filter(status=Deployment.Status.ACTIVE).select_related("model", "version"):
        deployments[deployment.model.name].append(
            DeployedVersion(
                environment=deployment.environment,
                mode=deployment.mode,
                version=deployment.version.version,
                traffic_percent=deployment.traffic_percent,
                since=deployment.created_at,
            )
        )
    primaries = {}
    for name, deployed in deployments.items():
        ordered = sorted(deployed, key=lambda d: (d.environment != "production", d.mode != "primary"))
        primaries[name] = ordered[0].version
    hours = defaultdict(list)
    slots = _hour_slots(start, end)
    per_hour = defaultdict(lambda: defaultdict(int))
    for row in HourlyAggregate.objects.filter(model_name__in=list(deployments), hour__gte=start, hour__lt=end):
        per_hour[row.model_name][row.hour.astimezone(dt.UTC)] += row.requests
        if row.version == primaries[row.model_name] or row.version == 0:
            hours[row.model_name].append(row)
    keys = set(primaries.items())
    validation = _validation_accuracies(keys)
    drift = _latest_drift(keys)
    firing = defaultdict(list)
    for alert in alerts_firing():
        firing[alert.model.name].append(alert)
    fleet = []
    for name in sorted(deployments):
        version = primaries[name]
        bucket = _Bucket(start, version, "all")
        bucket.hours = hours[name]
        numbers = bucket.payload("day")
        status = drift.get((name, version))
        facts = {
            "error_rate": numbers["error_rate"],
            "requests": numbers["requests"],
            "accuracy": numbers["accuracy"],
            "labelled": numbers["labelled"],
            "estimated": numbers["estimated_accuracy"],
            "validation": validation.get((name, version)),
            "drift": status,
        }
        fleet.append(
            ModelHealth(
                name=name,
                version=version,
                deployments=sorted(deployments[name], key=lambda d: (d.environment, d.mode)),
                requests=numbers["requests"],
                errors=numbers["errors"],
                error_rate=numbers["error_rate"],
                latency_p95_ms=numbers["latency_ms"]["p95"],
                labelled=numbers["labelled"],
                accuracy=numbers["accuracy"],
                estimated_accuracy=numbers["estimated_accuracy"],
                validation_accuracy=facts["validation"],
                drift=status,
                hourly_requests=[per_hour[name].get(slot, 0) for slot in slots],
                problems=_problems(**facts) + [f"alert firing: {alert.summary}" for alert in firing[name]],
                firing=firing[name],
            )
        )
    return fleet


@dataclass(frozen=True)
class HeatCell:
    feature: str
    moment: dt.datetime
    method: str
    score: float | None
    threshold: float | None
    drifted: bool | None
    severity: float  # 0: no sign of drift, 1: at the threshold (and beyond)


@dataclass(frozen=True)
class FeatureDetail:
    """One column's reference and current distributions on the reference's deciles (or its categories)."""

    name: str
    kind: str
    labels: list
    reference_shares: list
    current_shares: list
    reference_rows: int
    current_rows: int
    latest: dict | None  # the latest drift result of the column in the range: method, score, drifted


@dataclass(frozen=True)
class ModelDashboard:
    name: str
    start: dt.datetime
    end: dt.datetime
    granularity: str
    version: int | None
    versions: list
    deployments: list
    points: list
    accuracy: list
    heat_features: list
    heat_times: list
    heat_cells: list
    features: list
    feature: FeatureDetail | None
    by_deployment: list  # per (version, mode) over the whole range: the payload of monitoring_series
    reference_classes: dict  # the training labels' class counts of the version


def _severity(method, score, threshold):
    """How close a score is to its method's drift threshold, 0 (none) to 1 (at or past it)."""
    if score is None or threshold is None:
        return 0.0
    rule = RULES.get(method)
    if rule is not None and rule.p_value:
        # p-values: 1 → nothing, the threshold → 1; on a log scale, as p-values shrink by orders of magnitude.
        if score <= threshold:
            return 1.0
        return max(0.0, min(1.0, math.log(score) / math.log(threshold)))
    return max(0.0, min(1.0, score / threshold)) if threshold else 0.0


def _heatmap(model_name, version, start, end):
    runs = list(
        DriftRun.objects.filter(
            model_name=model_name,
            version=version,
            status=DriftRun.Status.OK,
            computed_at__gte=start,
            computed_at__lt=end,
        ).order_by("-computed_at")[:HEATMAP_COLUMNS]
    )
    runs.reverse()
    cells, features = [], []
    results = DriftResult.objects.filter(run__in=runs, verdict=True).select_related("run").order_by("role", "id")
    for result in results:
        label = result.name if result.role == ReferenceColumn.Role.FEATURE else f"{result.role}"
        if label not in features:
            features.append(label)
        cells.append(
            HeatCell(
                feature=label,
                moment=result.run.window_end,
                method=result.method,
                score=result.score,
                threshold=result.threshold,
                drifted=result.drifted,
                severity=_severity(result.method, result.score, result.threshold),
            )
        )
    return features, [run.window_end for run in runs], cells


def _decile_labels(column):
    """The reference deciles' ranges as labels: 'min–edge' per group of the sketch's bins."""
    edges = column.sketch_edges
    bounds = [column.minimum, *edges, column.maximum]
    labels, groups = [], column.sketch_groups
    for group in sorted(set(groups)):
        members = [i for i, g in enumerate(groups) if g == group]
        low, high = bounds[members[0]], bounds[members[-1] + 1]
        labels.append(f"{low:.3g}–{high:.3g}" if low is not None and high is not None else str(group))
    return labels


def _feature_detail(model_name, version, name, start, end, latest):
    reference = DriftReference.objects.filter(version__model__name=model_name, version__version=version).first()
    if reference is None:
        return None
    column = reference.columns.defer("sorted_values").filter(name=name, role=ReferenceColumn.Role.FEATURE).first()
    if column is None:
        return None
    sketches = FeatureSketch.objects.filter(
        model_name=model_name,
        version=version,
        name=name,
        role=ReferenceColumn.Role.FEATURE,
        hour__gte=start,
        hour__lt=end,
    )
    if column.kind == Kind.NUMERIC:
        merged = sketches_merge(list(sketches), bins=len(column.reference_bin_counts))
        groups = column.sketch_groups
        reference_counts, current_counts = defaultdict(int), defaultdict(int)
        for index, group in enumerate(groups):
            reference_counts[group] += column.reference_bin_counts[index]
            if merged.bin_counts is not None:
                current_counts[group] += int(merged.bin_counts[index])
        order = sorted(set(groups))
        labels = _decile_labels(column)
        reference_values = [reference_counts[g] for g in order]
        current_values = [current_counts[g] for g in order]
    else:
        merged = sketches_merge(list(sketches))
        current = merged.counts or {}
        training = column.counts or {}
        labels = sorted(set(training) | set(current), key=lambda key: -training.get(key, 0))
        reference_values = [training.get(label, 0) for label in labels]
        current_values = [current.get(label, 0) for label in labels]
    reference_total, current_total = sum(reference_values), sum(current_values)
    return FeatureDetail(
        name=name,
        kind=column.kind,
        labels=labels,
        reference_shares=[v / reference_total if reference_total else 0 for v in reference_values],
        current_shares=[v / current_total if current_total else 0 for v in current_values],
        reference_rows=reference_total,
        current_rows=current_total,
        latest=latest,
    )


def model_dashboard(
    *,
    by: Reader,
    model_name: str,
    start: dt.datetime,
    end: dt.datetime,
    version: int | None = None,
    feature: str | None = None,
) -> ModelDashboard:
    """One model over [start, end): its traffic series, accuracy against validation, the drift heatmap of a
    version (its production primary unless named) and one feature's reference and current distributions."""
    _can_read(by)
    model_require(model_name=model_name)
    hours = (end - start).total_seconds() / 3600
    granularity = "day" if hours > DAILY_FROM_HOURS else "hour"
    points = monitoring_series(model_name=model_name, start=start, end=end, granularity=granularity)
    deployments = list(
        Deployment.objects.filter(model__name=model_name, status=Deployment.Status.ACTIVE)
        .select_related("version")
        .order_by("environment", "mode")
    )
    served = sorted({p["version"] for p in points if p["version"]})
    deployed = [d.version.version for d in deployments]
    versions = sorted(set(served) | set(deployed))
    if version is None:
        primaries = [d.version.version for d in deployments if d.mode == Deployment.Mode.PRIMARY]
        busiest = defaultdict(int)
        for point in points:
            if point["version"]:
                busiest[point["version"]] += point["rows"]
        version = primaries[0] if primaries else (max(busiest, key=busiest.get) if busiest else None)
    accuracy = accuracy_summary(model_name=model_name, start=start, end=end)
    groups = defaultdict(list)
    for row in HourlyAggregate.objects.filter(model_name=model_name, hour__gte=start, hour__lt=end, version__gt=0):
        groups[(row.version, row.deployment_mode)].append(row)
    by_deployment = []
    for (number, mode), rows in sorted(groups.items()):
        bucket = _Bucket(start, number, mode)
        bucket.hours = rows
        by_deployment.append(bucket.payload("day"))
    heat_features, heat_times, heat_cells = ([], [], [])
    features, detail, reference_classes = [], None, {}
    if version is not None:
        heat_features, heat_times, heat_cells = _heatmap(model_name, version, start, end)
        features = list(
            ReferenceColumn.objects.filter(
                reference__version__model__name=model_name,
                reference__version__version=version,
                role=ReferenceColumn.Role.FEATURE,
            ).values_list("name", flat=True)
        )
        labels = ReferenceColumn.objects.filter(
            reference__version__model__name=model_name,
            reference__version__version=version,
            role=ReferenceColumn.Role.PREDICTION,
        ).first()
        reference_classes = (labels.counts or {}) if labels else {}
        # Default: the column the latest run found most drifted.
        latest = {}
        for cell in heat_cells:
            latest[cell.feature] = cell
        if feature is None and latest:
            feature = max(
                (name for name in latest if name in features), key=lambda name: latest[name].severity, default=None
            )
        feature = feature or (features[0] if features else None)
        if feature is not None and feature in features:
            cell = latest.get(feature)
            detail = _feature_detail(
                model_name,
                version,
                feature,
                start,
                end,
                {"method": cell.method, "score": cell.score, "threshold": cell.threshold, "drifted": cell.drifted}
                if cell
                else None,
            )
    return ModelDashboard(
        name=model_name,
        start=start,
        end=end,
        granularity=granularity,
        version=version,
        versions=versions,
        deployments=deployments,
        points=points,
        accuracy=accuracy,
        heat_features=heat_features,
        heat_times=heat_times,
        heat_cells=heat_cells,
        features=features,
        feature=detail,
        by_deployment=by_deployment,
        reference_classes=reference_classes,
    )
