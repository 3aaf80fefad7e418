"""Launching a training run or a sweep of them (validated, recorded, queued), and stopping one."""

from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING, Any

from django.db import transaction

from core.errors import BrokerUnavailable, Conflict, InvalidInput, NotFound
from core.permissions import permission_require
from experiments import trainers
from experiments.models import Experiment, Param, Run, RunTag
from experiments.services.datasets import dataset_resolve
from experiments.services.execution import run_fail, run_fail_locked, source_commit
from governance.models import AuditAction
from governance.services import audit_record

if TYPE_CHECKING:
    from core.permissions import Actor

logger = logging.getLogger(__name__)

MAX_SWEEP_RUNS = 200


def sweep_grid_parse(text: str | None) -> dict[str, list[str]]:
    """Parse the CLI form "n_estimators=50,100;max_depth=3,5" into {"n_estimators": ["50", "100"], ...}."""
    grid = {}
    for part in filter(None, (p.strip() for p in (text or "").split(";"))):
        key, sep, values = part.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise InvalidInput(f"{part!r} is not name=value1,value2", field="sweep")
        if key in grid:
            raise InvalidInput(f"{key!r} appears twice", field="sweep")
        grid[key] = [v.strip() for v in values.split(",") if v.strip()]
    return grid


def _sweep_combinations(*, algorithm, base_params, grid):
    """Every combination of the grid over the base params, each validated; InvalidInput on any fault."""
    if not isinstance(grid, dict) or not grid:
        raise InvalidInput("must map parameter names to lists of values", field="sweep")
    fixed = {_canonical_param_name(algorithm, name) for name in base_params}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise InvalidInput("must be a non-empty list of values", field=f"sweep.{key}")
        if _canonical_param_name(algorithm, key) in fixed:
            raise InvalidInput("is both a fixed param and a swept one", field=f"sweep.{key}")
    count = 1
    for values in grid.values():
        count *= len(values)
    if count > MAX_SWEEP_RUNS:
        raise InvalidInput(f"makes {count} runs; the limit is {MAX_SWEEP_RUNS}", field="sweep")
    keys = list(grid)
    combinations = []
    for values in itertools.product(*(grid[key] for key in keys)):
        raw = {**base_params, **dict(zip(keys, values, strict=True))}
        combinations.append(trainers.params_validate(algorithm, raw, field_prefix="sweep"))
    return combinations


def run_name_fit(name: str, *, suffix: str = "") -> str:
    """`name` + `suffix` cut to fit Run.name, shortening the name (marked "…") so the suffix survives.

    The suffix is what tells sweep members apart; one too long by itself is cut too.
    """
    limit = Run._meta.get_field("name").max_length
    if len(name) + len(suffix) <= limit:
        return name + suffix
    room = limit - len(suffix) - 1
    if room < 1:
        return (name + suffix)[: limit - 1] + "…"
    return name[:room] + "…" + suffix


def _params_create(run, params):
    Param.objects.bulk_create(Param(run=run, key=key, value=str(value)) for key, value in sorted(params.items()))


def run_launch(
    *,
    experiment: str,
    dataset: str,
    algorithm: str,
    params: dict[str, Any] | None = None,
    sweep: dict[str, list[Any]] | None = None,
    sweep_metric: str = "accuracy",
    n_samples: int | None = None,
    seed: int | None = None,
    name: str = "",
    by: Actor = None,
    inline: bool = False,
) -> Run:
    """Validate, record and start a training run (or a sweep of them) on the workers.

    Everything is checked before anything is written: a user without the add_run permission is
    refused (NotPermitted), a bad dataset, algorithm, param or grid raises InvalidInput and leaves no
    row behind. With inline=True the same
    Celery task runs in this process (the CLI without --queue); otherwise it is queued
    once the transaction commits. Returns the run, or the sweep's parent run.
    """
    permission_require(by, "experiments.add_run", doing="launch training runs")
    experiment_name = (experiment or "").strip()
    if not experiment_name:
        raise InvalidInput("is required", field="experiment")
    if len(experiment_name) > 200:
        raise InvalidInput("is longer than 200 characters", field="experiment")
    if len(name or "") > Run._meta.get_field("name").max_length:
        raise InvalidInput(f"is longer than {Run._meta.get_field('name').max_length} characters", field="name")
    validated = trainers.params_validate(algorithm, params or {})
    combinations = None
    if sweep:
        if sweep_metric not in trainers.RECORDED_METRICS:
            raise InvalidInput(f"must be one of {', '.join(trainers.RECORDED_METRICS)}", field="sweep_metric")
        combinations = _sweep_combinations(algorithm=algorithm, base_params=params or {}, grid=sweep)
    dataset_version = dataset_resolve(ref=dataset, n_samples=n_samples, seed=seed, by=by)
    if combinations and sweep_metric == "roc_auc":
        n_classes = len(dataset_version.schema.get("class_balance", {}))
        if n_classes > 2:
            raise InvalidInput(
                f"roc_auc is recorded for binary targets only; dataset {dataset_version} has {n_classes} classes",
                field="sweep_metric",
            )
    commit = source_commit()

    with transaction.atomic():
        experiment_obj, _ = Experiment.objects.get_or_create(name=experiment_name)
        base_name = run_name_fit(name or f"{algorithm}-{dataset_version.name}")
        run = Run.objects.create(
            experiment=experiment_obj,
            name=base_name,
            dataset=dataset_version,
            algorithm=algorithm,
            source_commit=commit,
            created_by=by,
            sweep_metric=sweep_metric if combinations else "",
        )
        if combinations:
            swept = {_canonical_param_name(algorithm, key) for key in sweep}
            _params_create(run, {key: value for key, value in validated.items() if key not in swept})
            RunTag.objects.create(run=run, key="sweep.grid", value=str(sweep))
            for combination in combinations:
                label = ",".join(f"{key}={combination[_canonical_param_name(algorithm, key)]}" for key in sweep)
                child = Run.objects.create(
                    experiment=experiment_obj,
                    parent=run,
                    name=run_name_fit(base_name, suffix=f" [{label}]"),
                    dataset=dataset_version,
                    algorithm=algorithm,
                    source_commit=commit,
                    created_by=by,
                )
                _params_create(child, combination)
        else:
            _params_create(run, validated)
        audit_record(
            actor=by,
            action=AuditAction.RUN_LAUNCHED,
            obj=run,
            after={
                "experiment": experiment_name,
                "dataset": str(dataset_version),
                "algorithm": algorithm,
                "params": validated,
                "sweep": sweep or None,
                "runs": len(combinations) if combinations else 1,
            },
        )
        if not inline:
            transaction.on_commit(lambda: _dispatch(run.pk))
    if inline:
        _execute_inline(run.pk)
        run.refresh_from_db()
    return run


def _canonical_param_name(algorithm, key):
    """The canonical name of a param given under an alias (c_param -> C)."""
    for spec in trainers.trainer_get(algorithm).all_params:
        if key == spec.name or key in spec.aliases:
            return spec.name
    return key


def _dispatch(run_id):
    """Queue a run's Celery work: one task, or a chord of child tasks closed by the sweep's finaliser."""
    from celery import chord

    from experiments.tasks import sweep_finalize, train_run

    run = Run.objects.get(pk=run_id)
    child_ids = list(run.children.order_by("id").values_list("id", flat=True))
    try:
        if child_ids:
            result = chord(train_run.si(child_id) for child_id in child_ids)(sweep_finalize.si(run.pk))
        else:
            result = train_run.apply_async(args=[run.pk])
    except Exception as exc:  # kombu's errors for an unreachable broker vary by transport
        reason = f"could not queue the run: the task broker is unreachable ({type(exc).__name__}: {exc})"
        for run_id_to_fail in [*child_ids, run.pk]:
            run_fail(run_id=run_id_to_fail, reason=reason)
        raise BrokerUnavailable(reason, extra={"run_id": run.pk}) from exc
    Run.objects.filter(pk=run.pk, celery_task_id="").update(celery_task_id=result.id)


def _execute_inline(run_id):
    """Run the same Celery tasks in this process, one after the other."""
    from experiments.tasks import sweep_finalize, train_run

    child_ids = list(Run.objects.filter(parent_id=run_id).order_by("id").values_list("id", flat=True))
    for child_id in child_ids:
        train_run.apply(args=[child_id])
    if child_ids:
        sweep_finalize.apply(args=[run_id])
    else:
        train_run.apply(args=[run_id])


def run_kill(*, run_id: int | str, by: Actor, reason: str = "") -> Run:
    """Stop a queued or running run (and a sweep's unfinished members): status KILLED, audited.

    A queued task finds the run ended and does nothing; a training one notices at its next
    progress write and stops. Whoever launched a run (and may still launch runs) can stop it;
    stopping someone else's needs stop_any_run. Conflict if the run has already ended.
    """
    permission_require(by, "experiments.add_run", "experiments.stop_any_run", doing="stop runs")
    with transaction.atomic():
        run = Run.objects.select_for_update().filter(pk=run_id).first()
        if run is None:
            raise NotFound(f"run {run_id} does not exist", field="run_id")
        if run.created_by_id != by.pk:
            permission_require(by, "experiments.stop_any_run", doing=f"stop run {run.pk}, launched by someone else")
        if run.is_terminal:
            raise Conflict(f"run {run.pk} already ended ({run.status})")
        reason = reason or f"stopped by {by.get_username()}"
        for child in run.children.select_for_update().exclude(status__in=Run.TERMINAL_STATUSES):
            run_fail_locked(child, reason=reason, status=Run.Status.KILLED, by=by)
        run_fail_locked(run, reason=reason, status=Run.Status.KILLED, by=by)
    return run
