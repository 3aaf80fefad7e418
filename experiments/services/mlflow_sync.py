"""Keep MLflow in step with our runs, and import runs from an existing MLflow store.

The Django database is the source of truth; MLflow gets a copy of every run (same
experiment name, params, metric history, tags, artifacts and the model as an MLflow
sklearn model) so the MLflow UI and client see it. A mirror that fails is recorded on
the run and retried by the `mirror_pending_runs` beat task.
"""

from __future__ import annotations

import contextlib
import logging
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.errors import NotFound
from core.mlflow import fluent_lock, mlflow_client
from core.permissions import permission_require
from core.storage import artifact_path, artifact_read_verified
from experiments.models import Experiment, Metric, Param, Run, RunTag
from experiments.services.datasets import dataset_frame_load
from experiments.services.launch import run_name_fit
from governance.models import AuditAction
from governance.services import audit_record

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from core.permissions import Actor

logger = logging.getLogger(__name__)


def _not_the_pickle_warning(record):
    """MLflow warns on every cloudpickle log_model; ours is deliberate (see _log_sklearn_model), and the
    warning landed in the middle of the CLI's progress bar looking like an error."""
    return not record.getMessage().startswith("Saving scikit-learn models in the pickle or cloudpickle format")


logging.getLogger("mlflow.sklearn").addFilter(_not_the_pickle_warning)

RUN_ID_TAG = "mlops_site.run_id"
_BATCH = 1000  # MLflow's log_batch accepts at most 1000 metrics per call

_STATUS_FROM_MLFLOW = {
    "RUNNING": Run.Status.RUNNING,
    "SCHEDULED": Run.Status.QUEUED,
    "FINISHED": Run.Status.FINISHED,
    "FAILED": Run.Status.FAILED,
    "KILLED": Run.Status.KILLED,
}


def _ms(moment):
    return int(moment.timestamp() * 1000) if moment else None


def _experiment_id(client, experiment):
    if experiment.mlflow_experiment_id:
        return experiment.mlflow_experiment_id
    remote = client.get_experiment_by_name(experiment.name)
    if remote is None:
        experiment_id = client.create_experiment(
            experiment.name,
            artifact_location=settings.MLFLOW_ARTIFACT_LOCATION or None,
            tags={key: str(value) for key, value in (experiment.tags or {}).items()},
        )
    else:
        experiment_id = remote.experiment_id
    Experiment.objects.filter(pk=experiment.pk).update(mlflow_experiment_id=experiment_id)
    experiment.mlflow_experiment_id = experiment_id
    return experiment_id


def _ensure_mlflow_run(client, run):
    """The MLflow run mirroring `run`, created if needed (a parent before its children)."""
    from mlflow.exceptions import MlflowException

    if run.mlflow_run_id:
        if not run.children.exists():
            # A leaf run not fully mirrored last time: start its copy afresh so nothing is logged twice.
            with contextlib.suppress(MlflowException):
                client.delete_run(run.mlflow_run_id)
        else:
            return run.mlflow_run_id
    tags = {
        RUN_ID_TAG: str(run.pk),
        "mlops_site.algorithm": run.algorithm,
        "mlflow.runName": run.name,
    }
    if run.dataset_id:
        tags["mlops_site.dataset"] = str(run.dataset)
        tags["mlops_site.dataset_sha256"] = run.dataset.sha256
    if run.source_commit:
        tags["mlflow.source.git.commit"] = run.source_commit
    if run.created_by_id:
        tags["mlflow.user"] = run.created_by.get_username()
    if run.parent_id:
        # Two children mirrored at once must not each create the parent's copy.
        with transaction.atomic():
            parent = Run.objects.select_for_update().select_related("experiment").get(pk=run.parent_id)
            tags["mlflow.parentRunId"] = _ensure_mlflow_run(client, parent)
    remote = client.create_run(
        _experiment_id(client, run.experiment),
        start_time=_ms(run.start_time or run.created_at),
        tags=tags,
        run_name=run.name,
    )
    run.mlflow_run_id = remote.info.run_id
    Run.objects.filter(pk=run.pk).update(mlflow_run_id=run.mlflow_run_id)
    return run.mlflow_run_id


def run_mirror_to_mlflow(*, run_id: int, tracking_uri: str | None = None) -> bool:
    """Copy an ended run to MLflow. Returns True on success; a failure is recorded on the run, not raised.

    A run already mirrored is left alone, so its MLflow run id never changes.
    """
    run = Run.objects.select_related("experiment", "dataset", "parent", "created_by").get(pk=run_id)
    if run.mlflow_synced:
        return True
    if not run.is_terminal:
        return False
    try:
        _mirror(run, mlflow_client(tracking_uri), tracking_uri or settings.MLFLOW_TRACKING_URI)
    except Exception as exc:  # MLflow down, disk full, a bad response: the run stays un-mirrored and is retried
        logger.warning("mirroring run %s to MLflow failed: %s", run.pk, exc)
        Run.objects.filter(pk=run.pk).update(mlflow_sync_error=f"{type(exc).__name__}: {exc}"[:4000])
        return False
    Run.objects.filter(pk=run.pk).update(mlflow_synced_at=timezone.now(), mlflow_sync_error="")
    return True


def _mirror(run, client, tracking_uri):
    from mlflow.entities import Metric as MlflowMetric
    from mlflow.entities import Param as MlflowParam
    from mlflow.entities import RunTag as MlflowTag

    mlflow_run_id = _ensure_mlflow_run(client, run)
    params = [MlflowParam(key, value) for key, value in run.params.values_list("key", "value")]
    tags = [MlflowTag(key, value) for key, value in run.tags.values_list("key", "value")]
    if run.error:
        tags.append(MlflowTag("mlops_site.error", run.error[:5000]))
    if run.best_child_id:
        tags.append(MlflowTag("mlops_site.best_child_run_id", str(run.best_child_id)))
    client.log_batch(mlflow_run_id, params=params, tags=tags)
    metrics = [
        MlflowMetric(key, value, _ms(at), step)
        for key, value, step, at in run.metrics.order_by("key", "step").values_list("key", "value", "step", "timestamp")
    ]
    for start in range(0, len(metrics), _BATCH):
        client.log_batch(mlflow_run_id, metrics=metrics[start : start + _BATCH])
    for artifact in run.artifacts.exclude(path__startswith="model/"):
        directory = artifact.path.rpartition("/")[0] or None
        client.log_artifact(mlflow_run_id, str(artifact_path(f"runs/{run.pk}/{artifact.path}")), directory)
    if run.status == Run.Status.FINISHED and run.model_path:
        _log_sklearn_model(run, mlflow_run_id, tracking_uri)
    client.set_terminated(mlflow_run_id, status=run.status, end_time=_ms(run.end_time))


def _log_sklearn_model(run, mlflow_run_id, tracking_uri):
    import io

    import joblib
    import mlflow
    import mlflow.sklearn
    import sklearn
    from mlflow.models import infer_signature

    # Only a model whose checksum matches our record is ever unpickled.
    pipeline = joblib.load(io.BytesIO(artifact_read_verified(run.model_path, run.model_sha256)))
    frame = dataset_frame_load(version=run.dataset).drop(columns=[run.dataset.target]).head(5)
    # Integer columns become doubles in the signature, so a client may send a missing value.
    frame = frame.astype({name: "float64" for name in frame.select_dtypes("integer").columns})
    signature = infer_signature(frame, pipeline.predict(frame))
    with fluent_lock:
        mlflow.set_tracking_uri(tracking_uri)
        with mlflow.start_run(run_id=mlflow_run_id):
            # cloudpickle, not MLflow's default skops: skops refuses pipelines of trusted-but-unlisted
            # types; our own serving never loads this copy, it loads our checksummed joblib file.
            mlflow.sklearn.log_model(
                pipeline,
                name="model",
                signature=signature,
                serialization_format="cloudpickle",
                pip_requirements=[f"scikit-learn=={sklearn.__version__}", f"joblib=={joblib.__version__}"],
            )


def runs_mirror_pending(*, run_ids: Iterable[int] | None = None, limit: int = 100) -> tuple[int, int]:
    """Mirror ended runs that are not yet in MLflow (all, or those of `run_ids`); returns (mirrored, failed).

    Order does not matter: a child mirrored first creates its parent's MLflow run, which the
    parent's own mirror then completes.
    """
    pending = Run.objects.filter(status__in=Run.TERMINAL_STATUSES, mlflow_synced_at__isnull=True)
    if run_ids is not None:
        pending = pending.filter(pk__in=run_ids)
    results = [
        run_mirror_to_mlflow(run_id=run_id) for run_id in pending.order_by("id").values_list("pk", flat=True)[:limit]
    ]
    return results.count(True), results.count(False)


def runs_mirror_now(*, run_ids: Iterable[int], by: Actor) -> tuple[int, int]:
    """Mirror these ended runs to MLflow now (the admin's action), for a user who may launch runs."""
    permission_require(by, "experiments.add_run", doing="mirror runs to MLflow")
    return runs_mirror_pending(run_ids=run_ids)


def mlflow_import(
    *, tracking_uri: str | None = None, by: Actor, on_progress: Callable[[int, int], object] | None = None
) -> dict[str, int]:
    """Import the experiments and runs of an MLflow store; runs already here are skipped.

    Returns a dict of counts: experiments created, runs created, runs skipped.
    """
    permission_require(by, "experiments.add_run", doing="import runs from MLflow")
    _local_store_require(tracking_uri or settings.MLFLOW_TRACKING_URI)
    from mlflow.entities import ViewType

    client = mlflow_client(tracking_uri)
    counts = {"experiments": 0, "runs": 0, "skipped": 0}
    experiments = client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=50000)
    remote_runs = []
    for remote_experiment in experiments:
        page_token = None
        while True:
            page = client.search_runs(
                [remote_experiment.experiment_id],
                max_results=1000,
                page_token=page_token,
                order_by=["attributes.start_time ASC"],
            )
            remote_runs.extend((remote_experiment, remote) for remote in page)
            page_token = page.token
            if not page_token:
                break
    # A run is known by its MLflow run id: ours are stored the moment their copy is created.
    known_ids = set(Run.objects.exclude(mlflow_run_id="").values_list("mlflow_run_id", flat=True))
    imported = {}
    for index, (remote_experiment, remote) in enumerate(remote_runs, start=1):
        if on_progress:
            on_progress(index, len(remote_runs))
        if remote.info.run_id in known_ids:
            counts["skipped"] += 1
            continue
        run, experiment_created = _import_run(client, remote_experiment, remote, by=by)
        counts["experiments"] += experiment_created
        counts["runs"] += 1
        imported[remote.info.run_id] = run
    # Parents are linked once all runs are in: a child can come before its parent.
    for run in imported.values():
        parent_mlflow_id = dict(run.tags.values_list("key", "value")).get("mlflow.parentRunId")
        if parent_mlflow_id:
            Run.objects.filter(pk=run.pk).update(parent=Run.objects.filter(mlflow_run_id=parent_mlflow_id).first())
    return counts


def _local_store_require(tracking_uri):
    """A local store (SQLite file, file store directory) must exist: MLflow would create an empty one and
    the import would report success, having read nothing."""
    from pathlib import Path
    from urllib.parse import urlparse

    parsed = urlparse(tracking_uri)
    if parsed.scheme == "sqlite":
        # SQLAlchemy's form: sqlite:///relative/path, sqlite:////absolute/path
        path = tracking_uri.removeprefix("sqlite:///") if tracking_uri.startswith("sqlite:///") else ""
        kind = "SQLite database"
    elif parsed.scheme in ("", "file"):
        path, kind = (parsed.path if parsed.scheme == "file" else tracking_uri), "MLflow file store"
    else:
        return  # a server (http, databricks, ...): reaching it says whether it exists
    if not path or not Path(path).exists():
        raise NotFound(f"no {kind} at {path or tracking_uri}", field="tracking_uri")


def _import_run(client, remote_experiment, remote, *, by):
    info, data = remote.info, remote.data
    with transaction.atomic():
        experiment, created = Experiment.objects.get_or_create(
            name=remote_experiment.name,
            defaults={
                "mlflow_experiment_id": remote_experiment.experiment_id,
                "tags": dict(remote_experiment.tags or {}),
            },
        )
        if not experiment.mlflow_experiment_id:
            Experiment.objects.filter(pk=experiment.pk).update(mlflow_experiment_id=remote_experiment.experiment_id)
        start = datetime.fromtimestamp(info.start_time / 1000, tz=UTC) if info.start_time else None
        end = datetime.fromtimestamp(info.end_time / 1000, tz=UTC) if info.end_time else None
        algorithm = data.tags.get("mlops_site.algorithm") or data.tags.get("estimator_name") or "imported"
        run = Run.objects.create(
            experiment=experiment,
            name=run_name_fit(info.run_name or info.run_id),
            algorithm=algorithm[:64],
            status=_STATUS_FROM_MLFLOW.get(info.status, Run.Status.FINISHED),
            start_time=start,
            end_time=end,
            source_commit=data.tags.get("mlflow.source.git.commit", "")[:40],
            mlflow_run_id=info.run_id,
            mlflow_synced_at=timezone.now(),
            # JSON has no NaN or infinity: such a value is recorded as missing.
            latest_metrics={key: _finite_or_none(value) for key, value in data.metrics.items()},
            progress=1.0,
            progress_message="imported from MLflow",
        )
        Param.objects.bulk_create(Param(run=run, key=k, value=v[:6000]) for k, v in data.params.items())
        RunTag.objects.bulk_create(RunTag(run=run, key=k, value=v[:5000]) for k, v in data.tags.items())
        points = []
        skipped = 0
        for key in data.metrics:
            for point in client.get_metric_history(info.run_id, key):
                if _finite_or_none(point.value) is None:
                    # SQLite stores NaN as NULL, and no JSON answer can carry NaN or infinity.
                    skipped += 1
                    continue
                points.append(
                    Metric(
                        run=run,
                        key=key,
                        value=point.value,
                        step=point.step,
                        timestamp=datetime.fromtimestamp(point.timestamp / 1000, tz=UTC),
                    )
                )
        Metric.objects.bulk_create(points, batch_size=1000)
        after = {"mlflow_run_id": info.run_id, "experiment": experiment.name, "status": run.status}
        if skipped:
            after["metric_points_skipped"] = skipped
            logger.info("run %s: %d NaN or infinite metric points not imported", info.run_id, skipped)
        audit_record(
            actor=by,
            actor_name=None if by else "import_mlflow",
            action=AuditAction.RUN_IMPORTED,
            obj=run,
            after=after,
        )
    return run, created


def _finite_or_none(value):
    value = float(value)
    return value if math.isfinite(value) else None
