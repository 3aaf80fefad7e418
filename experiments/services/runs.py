"""Training runs: launch (one or a sweep), execute, finish, fail, and reap lost ones."""

import itertools
import logging
import subprocess
import time
import traceback
from datetime import timedelta
from functools import lru_cache

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from core.errors import ApplicationError, Conflict, InvalidInput, NotFound
from core.metrics import lower_is_better
from core.permissions import permission_require
from core.storage import artifact_write
from experiments import trainers
from experiments.models import Artifact, Experiment, Metric, Param, Run, RunTag
from experiments.services.datasets import dataset_frame_load, dataset_resolve
from experiments.signals import run_progress
from governance.models import AuditAction
from governance.services import audit_record

logger = logging.getLogger(__name__)

MAX_SWEEP_RUNS = 200


_PROGRESS_WRITE_INTERVAL = 0.5  # seconds between progress writes to the database


@lru_cache(maxsize=1)
def source_commit():
    """The git commit of the running code: SOURCE_COMMIT if set (images have no .git), else git's HEAD, else ''."""
    if settings.SOURCE_COMMIT:
        return settings.SOURCE_COMMIT
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def sweep_grid_parse(text):
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


def run_name_fit(name, *, suffix=""):
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
    experiment,
    dataset,
    algorithm,
    params=None,
    sweep=None,
    sweep_metric="accuracy",
    n_samples=None,
    seed=None,
    name="",
    by=None,
    inline=False,
):
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


class BrokerUnavailable(ApplicationError):
    """The run was recorded but could not be handed to the workers; it is marked FAILED."""

    status_code = 503


class _RunStopped(Exception):
    """The run was killed while it trained: stop and keep nothing."""


class _ProgressReporter:
    """Writes a run's progress and heartbeat at most every half second, and signals every step.

    The write only touches a RUNNING run, so it also notices a kill within half a second,
    whatever the broker, and stops the fit.
    """

    def __init__(self, run_id):
        self.run_id = run_id
        self.last_write = 0.0

    def __call__(self, fraction, message):
        fraction = min(max(float(fraction), 0.0), 1.0)
        now = time.monotonic()
        if now - self.last_write >= _PROGRESS_WRITE_INTERVAL or fraction >= 1.0:
            updated = Run.objects.filter(pk=self.run_id, status=Run.Status.RUNNING).update(
                progress=fraction, progress_message=message[:200], heartbeat_at=timezone.now()
            )
            if not updated:
                raise _RunStopped
            self.last_write = now
        run_progress.send(sender=Run, run_id=self.run_id, fraction=fraction, message=message)


def run_start(*, run_id, task_id=""):
    """Mark a run RUNNING for this attempt; returns None when there is nothing to do.

    Safe to call twice: a finished run is left alone, and a run found RUNNING is one whose
    worker was lost (the broker redelivered it), so it is started again from scratch until
    RUN_MAX_ATTEMPTS is reached, then marked FAILED.
    """
    with transaction.atomic():
        run = Run.objects.select_for_update().filter(pk=run_id).first()
        if run is None:
            logger.warning("run %s does not exist; its task is dropped", run_id)
            return None
        if run.is_terminal:
            return None
        if run.attempts >= settings.RUN_MAX_ATTEMPTS:
            _run_fail_locked(run, reason=f"worker lost: the run was interrupted {run.attempts} times, giving up")
            return None
        previous_status = run.status
        run.metrics.all().delete()
        run.artifacts.all().delete()
        now = timezone.now()
        run.status = Run.Status.RUNNING
        run.attempts = F("attempts") + 1
        run.start_time = now
        run.heartbeat_at = now
        run.progress = 0.0
        run.progress_message = "starting"
        run.error = ""
        run.latest_metrics = {}
        if task_id:
            run.celery_task_id = task_id
        run.save()
        run.refresh_from_db()
        audit_record(
            actor=None,
            actor_name="worker",
            action=AuditAction.RUN_STARTED,
            obj=run,
            before={"status": previous_status},
            after={"status": run.status, "attempt": run.attempts},
        )
    if run.parent_id:
        Run.objects.filter(pk=run.parent_id, status=Run.Status.QUEUED).update(
            status=Run.Status.RUNNING, start_time=now, heartbeat_at=now
        )
    return run


def run_execute(*, run_id, task_id=""):
    """Train a queued run and record its metrics, history and artifacts. Called by the Celery task."""
    run = run_start(run_id=run_id, task_id=task_id)
    if run is None:
        return Run.objects.filter(pk=run_id).first()
    report = _ProgressReporter(run.pk)
    history = []
    try:
        report(0.02, "loading dataset")
        frame = dataset_frame_load(version=run.dataset)
        params = _typed_params(run)
        result = trainers.train(
            frame,
            target=run.dataset.target,
            algorithm=run.algorithm,
            params=params,
            on_progress=report,
            on_history=lambda key, step, value: history.append((key, step, float(value), timezone.now())),
        )
        _run_finish(run, result=result, history=history)
    except _RunStopped:
        logger.info("run %s was stopped while training", run.pk)
    except ApplicationError as exc:
        run_fail(run_id=run.pk, reason=str(exc))
    except SoftTimeLimitExceeded:
        run_fail(run_id=run.pk, reason=f"time limit of {settings.TRAINING_TIME_LIMIT} s exceeded")
    except Exception as exc:  # a bug or a resource fault: recorded on the run, and in the worker log
        logger.exception("run %s failed", run.pk)
        run_fail(run_id=run.pk, reason=f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc(limit=5)}")
    report_parent_progress(run)
    return Run.objects.get(pk=run.pk)


def _typed_params(run):
    raw = dict(run.params.values_list("key", "value"))
    return trainers.params_validate(run.algorithm, raw)


def _run_finish(run, *, result, history):
    base = f"runs/{run.pk}"
    files = {**result.artifacts, "model/model.joblib": result.model_bytes}
    artifacts = [
        Artifact(run=run, path=path, size_bytes=len(content), sha256=artifact_write(f"{base}/{path}", content))
        for path, content in sorted(files.items())
    ]
    now = timezone.now()
    with transaction.atomic():
        locked = Run.objects.select_for_update().get(pk=run.pk)
        if locked.status != Run.Status.RUNNING or locked.attempts != run.attempts:
            raise Conflict(f"run {run.pk} changed state while training ({locked.status})")
        Artifact.objects.bulk_create(artifacts)
        Metric.objects.bulk_create(
            [Metric(run=run, key=key, value=value, step=step, timestamp=at) for key, step, value, at in history]
            + [Metric(run=run, key=key, value=value, step=0, timestamp=now) for key, value in result.metrics.items()],
            batch_size=1000,
        )
        latest = {key: value for key, _, value, _ in history}
        latest.update(result.metrics)
        locked.latest_metrics = latest
        locked.status = Run.Status.FINISHED
        locked.end_time = now
        locked.heartbeat_at = now
        locked.progress = 1.0
        locked.progress_message = "finished"
        locked.model_path = f"{base}/model/model.joblib"
        locked.model_sha256 = result.model_sha256
        locked.save()
        RunTag.objects.update_or_create(run=run, key="classes", defaults={"value": ",".join(result.classes)[:5000]})
        audit_record(
            actor=None,
            actor_name="worker",
            action=AuditAction.RUN_FINISHED,
            obj=locked,
            before={"status": Run.Status.RUNNING},
            after={"status": Run.Status.FINISHED, "metrics": result.metrics, "model_sha256": result.model_sha256},
        )
    run_progress.send(sender=Run, run_id=run.pk, fraction=1.0, message="finished")


def _run_fail_locked(run, *, reason, status=Run.Status.FAILED, by=None):
    previous = run.status
    now = timezone.now()
    run.status = status
    run.error = reason[:20000]
    run.end_time = now
    run.start_time = run.start_time or now
    run.progress_message = "failed" if status == Run.Status.FAILED else "killed"
    run.save(update_fields=["status", "error", "end_time", "start_time", "progress_message"])
    audit_record(
        actor=by,
        actor_name=None if by else "worker",
        action=AuditAction.RUN_FAILED if status == Run.Status.FAILED else AuditAction.RUN_KILLED,
        obj=run,
        before={"status": previous},
        after={"status": status},
        reason=reason[:2000],
    )


def run_fail(*, run_id, reason):
    """Mark a run FAILED with the reason, unless it already ended."""
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run_id)
        if run.is_terminal:
            return run
        _run_fail_locked(run, reason=reason)
    return run


def run_kill(*, run_id, by, reason=""):
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
            _run_fail_locked(child, reason=reason, status=Run.Status.KILLED, by=by)
        _run_fail_locked(run, reason=reason, status=Run.Status.KILLED, by=by)
    return run


def report_parent_progress(run):
    """A sweep parent's progress is the share of its children that have ended."""
    if not run.parent_id:
        return
    children = Run.objects.filter(parent_id=run.parent_id)
    total = children.count()
    ended = children.filter(status__in=Run.TERMINAL_STATUSES).count()
    Run.objects.filter(pk=run.parent_id).exclude(status__in=Run.TERMINAL_STATUSES).update(
        progress=ended / total if total else 1.0,
        progress_message=f"{ended}/{total} runs ended",
        heartbeat_at=timezone.now(),
    )


def sweep_finalize(*, parent_id):
    """Close a sweep: record its best child by the sweep metric; FAILED if no child finished."""
    with transaction.atomic():
        parent = Run.objects.select_for_update().filter(pk=parent_id).first()
        if parent is None or parent.is_terminal:
            return parent
        children = list(parent.children.all())
        unfinished = [child for child in children if not child.is_terminal]
        if unfinished:
            raise Conflict(f"sweep {parent.pk} still has {len(unfinished)} runs in progress")
        finished = [c for c in children if c.status == Run.Status.FINISHED and parent.sweep_metric in c.latest_metrics]
        now = timezone.now()
        if not finished:
            _run_fail_locked(parent, reason=f"none of the {len(children)} runs finished with {parent.sweep_metric}")
            return parent
        lower = lower_is_better(parent.sweep_metric)
        best = (min if lower else max)(finished, key=lambda child: child.latest_metrics[parent.sweep_metric])
        parent.best_child = best
        parent.latest_metrics = dict(best.latest_metrics)
        parent.status = Run.Status.FINISHED
        parent.start_time = parent.start_time or min(c.start_time for c in finished)
        parent.end_time = now
        parent.progress = 1.0
        parent.progress_message = f"best: run #{best.pk}"
        parent.save()
        Metric.objects.bulk_create(
            Metric(run=parent, key=key, value=value, step=0, timestamp=now)
            for key, value in best.latest_metrics.items()
        )
        RunTag.objects.update_or_create(run=parent, key="sweep.best_run_id", defaults={"value": str(best.pk)})
        audit_record(
            actor=None,
            actor_name="worker",
            action=AuditAction.RUN_FINISHED,
            obj=parent,
            after={
                "status": parent.status,
                "best_child": best.pk,
                "metric": parent.sweep_metric,
                "value": best.latest_metrics[parent.sweep_metric],
                "children_failed": len(children) - len(finished),
            },
        )
    return parent


def runs_reap_lost(*, now=None):
    """Fail RUNNING runs whose heartbeat stopped longer ago than RUN_HEARTBEAT_TIMEOUT; returns their ids."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.RUN_HEARTBEAT_TIMEOUT)
    lost = list(
        Run.objects.filter(status=Run.Status.RUNNING, heartbeat_at__lt=cutoff, children__isnull=True).values_list(
            "pk", "heartbeat_at"
        )
    )
    for run_id, heartbeat in lost:
        run = run_fail(run_id=run_id, reason=f"worker lost: no heartbeat since {heartbeat:%Y-%m-%d %H:%M:%S %Z}")
        report_parent_progress(run)
    # A sweep whose children all ended but whose chord callback never ran (a child task
    # crashed or its message was lost) is closed here.
    stranded = (
        Run.objects.filter(status__in=[Run.Status.QUEUED, Run.Status.RUNNING], children__isnull=False)
        .exclude(children__status__in=[Run.Status.QUEUED, Run.Status.RUNNING])
        .distinct()
        .values_list("pk", flat=True)
    )
    for parent_id in list(stranded):
        sweep_finalize(parent_id=parent_id)
    return [run_id for run_id, _ in lost]
