"""Registering a finished run as a new version of a model, behind the model's metric gate."""

from __future__ import annotations

import hashlib
import io
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max

from core.errors import Conflict, InvalidInput, NotFound, Unprocessable
from core.metrics import lower_is_better
from core.permissions import permission_require
from core.storage import artifact_read_verified, artifact_write
from experiments.models import Run
from experiments.services import dataset_frame_load
from governance.models import AuditAction, WebhookSubscription
from governance.services import audit_record
from registry.fast_inference import onnx_convert
from registry.models import ModelVersion, RegisteredModel, model_name_validator
from registry.services.common import event_emit, model_sync_later
from registry.signals import version_registered, version_serving_form_changed
from registry.signature import reference_stats_compute, signature_build

if TYPE_CHECKING:
    from collections.abc import Mapping

    import pandas as pd
    from sklearn.base import BaseEstimator

    from core.permissions import Actor


def gate_failures(*, thresholds: Mapping[str, float], metrics: Mapping[str, float]) -> list[str]:
    """The thresholds a run's metrics miss, each as a sentence; empty when the run passes."""
    failures = []
    for metric, threshold in sorted(thresholds.items()):
        value = metrics.get(metric)
        if value is None:
            failures.append(f"the run has no {metric} metric (the gate needs {metric})")
        elif lower_is_better(metric) and value > threshold:
            failures.append(f"{metric} {value:.4g} is above the maximum {threshold:g}")
        elif not lower_is_better(metric) and value < threshold:
            failures.append(f"{metric} {value:.4g} is below the minimum {threshold:g}")
    return failures


def _run_registrable(run_id):
    try:
        run = Run.objects.select_related("dataset", "best_child").get(pk=int(run_id))
    except (Run.DoesNotExist, TypeError, ValueError):
        raise NotFound(f"run {run_id} does not exist", field="run_id") from None
    if run.is_sweep:
        hint = f"; register its best member, run {run.best_child_id}" if run.best_child_id else ""
        raise InvalidInput(f"run {run.pk} is a sweep, not a model{hint}", field="run_id")
    if run.status != Run.Status.FINISHED or not run.model_path:
        raise Conflict(f"run {run.pk} is {run.status}; only a FINISHED run can be registered", field="run_id")
    return run


def signature_differences(*, current: Mapping[str, Any], candidate: Mapping[str, Any]) -> list[str]:
    """How `candidate` differs from `current` (features, their types and order, target, classes), in words."""
    changes = []
    old = {f["name"]: f["dtype"] for f in current["features"]}
    new = {f["name"]: f["dtype"] for f in candidate["features"]}
    if added := [name for name in new if name not in old]:
        changes.append(f"features added: {', '.join(added)}")
    if removed := [name for name in old if name not in new]:
        changes.append(f"features removed: {', '.join(removed)}")
    for name in old.keys() & new.keys():
        if old[name] != new[name]:
            changes.append(f"feature {name} is {new[name]}, was {old[name]}")
    if not added and not removed and list(old) != list(new):
        changes.append("the features are in another order")
    if current["target"] != candidate["target"]:
        changes.append(f"target is {candidate['target']}, was {current['target']}")
    if list(current["classes"]) != list(candidate["classes"]):
        changes.append(f"classes are {', '.join(candidate['classes'])}; were {', '.join(current['classes'])}")
    return sorted(changes)


def _compared_version(model):
    """What a new version must fit: the model's Production version, or its latest."""
    if model is None:
        return None
    return (
        model.versions.filter(stage=ModelVersion.Stage.PRODUCTION).first()
        or model.versions.order_by("-version").first()
    )


def model_version_register(
    *, run_id: int | str, model_name: str, by: Actor, description: str = "", breaking_change: bool = False
) -> ModelVersion:
    """Register a finished run as the next version of `model_name` (created if new); returns the version.

    Refused with the reason when the run is not a finished training run, its model file no longer
    matches its checksum, its metrics miss the model's thresholds, or its features, target or classes
    differ from the model's Production (or latest) version: a version must fit its model, unless it
    is registered deliberately as a breaking change (audited, and shown to whoever approves it).
    Nothing is written then.
    """
    permission_require(by, "registry.add_modelversion", doing="register model versions")
    model_name = (model_name or "").strip()
    try:
        model_name_validator(model_name)
    except ValidationError as exc:
        raise InvalidInput(exc.messages[0], field="name") from None
    run = _run_registrable(run_id)
    model_bytes = artifact_read_verified(run.model_path, run.model_sha256)  # 409 if the file changed
    existing = RegisteredModel.objects.filter(name=model_name).first()
    if existing is not None:
        failures = gate_failures(thresholds=existing.metric_thresholds, metrics=run.latest_metrics)
        if failures:
            raise Unprocessable(
                f"run {run.pk} misses the registration gate of {model_name}: " + "; ".join(failures),
                field="run_id",
                extra={"gate": existing.metric_thresholds, "failures": failures},
            )
    import joblib

    pipeline = joblib.load(io.BytesIO(model_bytes))  # safe: its sha256 matches our record
    signature = signature_build(dataset=run.dataset, classes=pipeline.classes_)
    compared = _compared_version(existing)
    changes = signature_differences(current=compared.signature, candidate=signature) if compared else []
    if changes and not breaking_change:
        raise Unprocessable(
            f"run {run.pk} does not fit {compared}: " + "; ".join(changes) + ". Register it as a breaking change "
            "if this is deliberate (clients of the model must change too).",
            field="run_id",
            extra={"compared_with": str(compared), "differences": changes},
        )
    frame = dataset_frame_load(version=run.dataset)
    reference = reference_stats_compute(frame, features=[f["name"] for f in signature["features"]])
    fast = fast_form_build(pipeline=pipeline, signature=signature, frame=frame.drop(columns=[run.dataset.target]))
    try:
        with transaction.atomic():
            return _version_create(
                run=run,
                model_name=model_name,
                description=description,
                by=by,
                signature=signature,
                reference=reference,
                fast=fast,
                breaking_change=breaking_change,
            )
    except IntegrityError:
        # Another registration of this model took the same number at the same moment.
        raise Conflict(f"{model_name} was registered to concurrently; try again", field="name") from None


def fast_form_build(*, pipeline: BaseEstimator, signature: Mapping[str, Any], frame: pd.DataFrame) -> dict[str, Any]:
    """The fields of a version's fast inference form: ONNX stored beside the model if it matches, else sklearn."""
    onnx_bytes, difference, note = onnx_convert(
        pipeline=pipeline, features=signature["features"], frame=frame, tolerance=settings.ONNX_MAX_ABS_DIFF
    )
    # No ONNX file unless it matched: a rebuild that falls back leaves no earlier file named beside scikit-learn.
    fast = {
        "serving_form": ModelVersion.ServingForm.SKLEARN,
        "onnx_path": "",
        "onnx_sha256": "",
        "onnx_max_abs_diff": difference,
        "serving_note": note,
    }
    if onnx_bytes is not None:
        # Stored by content: two versions of one run (in two models) never overwrite each other's file.
        digest = hashlib.sha256(onnx_bytes).hexdigest()
        onnx_path = f"onnx/{digest}.onnx"
        artifact_write(onnx_path, onnx_bytes)
        fast.update(serving_form=ModelVersion.ServingForm.ONNX, onnx_path=onnx_path, onnx_sha256=digest)
    return fast


def version_fast_form_rebuild(*, version: ModelVersion, by: Actor) -> ModelVersion:
    """Make the fast form of a version registered before it existed (or after a converter upgrade); audited."""
    permission_require(by, "registry.add_modelversion", doing="rebuild the fast form of versions")
    import joblib

    pipeline = joblib.load(io.BytesIO(artifact_read_verified(version.artifact_path, version.artifact_sha256)))
    frame = dataset_frame_load(version=version.dataset).drop(columns=[version.dataset.target])
    fast = fast_form_build(pipeline=pipeline, signature=version.signature, frame=frame)
    with transaction.atomic():
        locked = ModelVersion.objects.select_for_update().get(pk=version.pk)
        before = {"serving_form": locked.serving_form, "onnx_sha256": locked.onnx_sha256}
        for key, value in fast.items():
            setattr(locked, key, value)
        locked.save(update_fields=list(fast))
        audit_record(
            actor=by,
            action=AuditAction.VERSION_FAST_FORM_BUILT,
            obj=locked,
            before=before,
            after={"serving_form": locked.serving_form, "onnx_sha256": locked.onnx_sha256},
            reason=locked.serving_note,
        )
        version_serving_form_changed.send(sender=ModelVersion, version=locked, by=by)
    return locked


def _version_create(*, run, model_name, description, by, signature, reference, fast, breaking_change):
    model, created = RegisteredModel.objects.get_or_create(name=model_name, defaults={"owner": by, "created_by": by})
    if created:
        audit_record(actor=by, action=AuditAction.MODEL_CREATED, obj=model, after={"name": model.name})
    # The row lock numbers versions one after another, also under concurrent registrations.
    model = RegisteredModel.objects.select_for_update().get(pk=model.pk)
    failures = gate_failures(thresholds=model.metric_thresholds, metrics=run.latest_metrics)
    if failures:  # the thresholds changed since the check above
        raise Unprocessable(f"run {run.pk} misses the registration gate of {model_name}: " + "; ".join(failures))
    compared = _compared_version(model)  # again under the lock: Production may have moved meanwhile
    changes = signature_differences(current=compared.signature, candidate=signature) if compared else []
    if changes and not breaking_change:
        raise Unprocessable(f"run {run.pk} does not fit {compared}: " + "; ".join(changes), field="run_id")
    already = model.versions.filter(run=run).first()
    if already is not None:
        raise Conflict(f"run {run.pk} is already {already}", field="run_id")
    number = (model.versions.aggregate(top=Max("version"))["top"] or 0) + 1
    version = ModelVersion.objects.create(
        model=model,
        version=number,
        run=run,
        dataset=run.dataset,
        metrics=run.latest_metrics,
        artifact_path=run.model_path,
        artifact_sha256=run.model_sha256,
        signature=signature,
        reference_stats=reference,
        description=description,
        created_by=by,
        breaking_change=bool(changes),
        signature_changes=changes,
        **fast,
    )
    audit_record(
        actor=by,
        action=AuditAction.VERSION_REGISTERED,
        obj=version,
        after={
            "run_id": run.pk,
            "dataset": str(run.dataset),
            "artifact_sha256": version.artifact_sha256,
            "metrics": version.metrics,
            "serving_form": version.serving_form,
            "breaking_change": version.breaking_change,
            "signature_changes": changes,
            "compared_with": str(compared) if compared else None,
        },
    )
    event_emit(WebhookSubscription.Event.VERSION_REGISTERED, version)
    model_sync_later(model)
    version_registered.send(sender=ModelVersion, version=version, by=by)
    return version


_EDITABLE = ("description", "owner", "intended_use", "tags", "metric_thresholds")


def registered_model_update(*, model: RegisteredModel, by: Actor, changes: Mapping[str, Any]) -> RegisteredModel:
    """Edit a model's documentation, tags or registration gate; audited with before and after."""
    permission_require(by, "registry.change_registeredmodel", doing="edit registered models")
    unknown = set(changes) - set(_EDITABLE)
    if unknown:
        raise InvalidInput(f"cannot be edited; editable: {', '.join(_EDITABLE)}", field=sorted(unknown)[0])
    thresholds = changes.get("metric_thresholds", model.metric_thresholds)
    if not isinstance(thresholds, dict) or not all(
        isinstance(value, int | float) and not isinstance(value, bool) for value in thresholds.values()
    ):
        raise InvalidInput('give metric names and numbers, e.g. {"accuracy": 0.95}', field="metric_thresholds")

    def snapshot(obj):
        return {
            key: (obj.owner.get_username() if obj.owner else None) if key == "owner" else getattr(obj, key)
            for key in changes
        }

    with transaction.atomic():
        locked = RegisteredModel.objects.select_for_update().get(pk=model.pk)
        before = snapshot(locked)
        for key, value in changes.items():
            setattr(locked, key, value)
        after = snapshot(locked)
        if before == after:
            return locked
        locked.save()
        audit_record(actor=by, action=AuditAction.MODEL_UPDATED, obj=locked, before=before, after=after)
        model_sync_later(locked)
    return locked
