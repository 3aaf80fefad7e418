"""Reads of the experiments app."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from django.db.models import Count, Prefetch

from core.errors import NotFound
from core.metrics import lower_is_better
from experiments.models import DatasetUpload, Experiment, Metric, Run

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from django.db.models import QuerySet

# The metrics shown as columns and compared first; others follow alphabetically.
MAIN_METRICS = ("accuracy", "f1_macro", "precision_macro", "recall_macro", "roc_auc", "log_loss")


def experiment_list() -> QuerySet[Experiment]:
    return Experiment.objects.annotate(run_count=Count("runs")).order_by("name")


def run_list(
    *, experiment: str | None = None, status: str | None = None, parents_only: bool = False
) -> QuerySet[Run]:
    runs = Run.objects.select_related("experiment", "dataset").order_by("-created_at", "-id")
    if experiment:
        runs = runs.filter(experiment__name=experiment)
    if status:
        runs = runs.filter(status=status)
    if parents_only:
        runs = runs.filter(parent__isnull=True)
    return runs


def run_get(*, run_id: int | str) -> Run:
    """A run with what its detail page and API need, or NotFound."""
    try:
        return (
            Run.objects.select_related("experiment", "dataset", "parent", "best_child")
            .prefetch_related("params", "tags", "artifacts", Prefetch("children", Run.objects.order_by("id")))
            .get(pk=run_id)
        )
    except (Run.DoesNotExist, ValueError):
        raise NotFound(f"run {run_id} does not exist", field="run_id") from None


def dataset_upload_get(*, upload_id: int | str) -> DatasetUpload:
    """A large upload with the version it stored, or NotFound."""
    try:
        return DatasetUpload.objects.select_related("version").get(pk=upload_id)
    except (DatasetUpload.DoesNotExist, ValueError):
        raise NotFound(f"dataset upload {upload_id} does not exist", field="upload_id") from None


def run_metric_history(*, run_id: int | str, key: str) -> list[Metric]:
    """The (step, value, timestamp) points of one metric of a run; NotFound if the run or key has none."""
    run = run_get(run_id=run_id)
    points = list(Metric.objects.filter(run=run, key=key).order_by("step", "timestamp"))
    if not points:
        keys = sorted(set(Metric.objects.filter(run=run).values_list("key", flat=True)))
        raise NotFound(f"run {run.pk} has no metric {key!r}; it has: {', '.join(keys) or 'none'}", field="key")
    return points


def run_histories(*, run_ids: Iterable[int]) -> dict[int, dict[str, list[tuple[int, float]]]]:
    """{run_id: {key: [(step, value), ...]}} for metrics with more than one step: what charts draw."""
    series = defaultdict(lambda: defaultdict(list))
    rows = (
        Metric.objects.filter(run_id__in=run_ids)
        .order_by("run_id", "key", "step")
        .values_list("run_id", "key", "step", "value")
    )
    for run_id, key, step, value in rows:
        series[run_id][key].append((step, value))
    return {run_id: {key: points for key, points in keys.items() if len(points) > 1} for run_id, keys in series.items()}


def runs_compare(*, run_ids: Sequence[int]) -> dict[str, Any]:
    """Runs side by side: their params and last metric values as rows, one column per run."""
    runs = list(Run.objects.filter(pk__in=run_ids).select_related("experiment", "dataset").prefetch_related("params"))
    runs.sort(key=lambda run: run_ids.index(run.pk) if run.pk in run_ids else 0)
    param_keys = sorted({p.key for run in runs for p in run.params.all()})
    params = {run.pk: {p.key: p.value for p in run.params.all()} for run in runs}
    metric_keys = [k for k in MAIN_METRICS if any(k in run.latest_metrics for run in runs)]
    metric_keys += sorted({k for run in runs for k in run.latest_metrics} - set(metric_keys))
    param_rows = []
    for key in param_keys:
        values = [params[run.pk].get(key, "") for run in runs]
        param_rows.append({"key": key, "values": values, "differs": len(set(values)) > 1})
    metric_rows = []
    for key in metric_keys:
        values = [run.latest_metrics.get(key) for run in runs]
        present = [v for v in values if v is not None]
        best = (min if lower_is_better(key) else max)(present) if len(present) > 1 else None
        metric_rows.append({"key": key, "values": [(v, v is not None and v == best) for v in values]})
    return {"runs": runs, "param_rows": param_rows, "metric_rows": metric_rows}
