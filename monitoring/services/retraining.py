"""Retraining when the data moves: a model's policy (off by default) starts a training run of the serving
version's algorithm and params on fresh data when dataset drift or low live accuracy holds, registers the
result if it passes the gate, and opens a promotion request with the evidence. It never promotes: the
request waits for two people as any other. One open retraining per model, a cooldown, every step audited.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

import pandas as pd
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.errors import ApplicationError, Conflict, NotFound
from core.permissions import permission_require
from experiments import datasets as data
from experiments import services as experiment_services
from experiments.models import Run
from governance.models import AuditAction
from governance.services import audit_record
from monitoring.models import Alert, AlertRule, DriftRun, HourlyAggregate, Retraining, RetrainingPolicy
from monitoring.services.aggregates import HOUR
from monitoring.services.alerts import column_effect_drifted, rules_for
from monitoring.windows import hour_floor, window_parse
from registry import selectors as registry_selectors
from registry import services as registry_services
from serving.models import PredictionLog

if TYPE_CHECKING:
    from core.permissions import Actor
    from registry.models import ModelVersion

logger = logging.getLogger(__name__)
Status = Retraining.Status


def retraining_policy_save(*, policy: RetrainingPolicy, by: Actor) -> RetrainingPolicy:
    """Create or edit a model's retraining policy (the admin's form), validated and audited."""
    permission_require(
        by,
        "monitoring.add_retrainingpolicy" if policy.pk is None else "monitoring.change_retrainingpolicy",
        doing="edit retraining policies",
    )
    policy.full_clean()

    def snapshot(obj):
        return {
            "enabled": obj.enabled,
            "drift_windows": obj.drift_windows,
            "accuracy_below": obj.accuracy_below,
            "accuracy_windows": obj.accuracy_windows,
            "min_labelled": obj.min_labelled,
            "cooldown_hours": obj.cooldown_hours,
            "request_stage": obj.request_stage,
            "run_as": obj.run_as.get_username() if obj.run_as_id else None,
        }

    with transaction.atomic():
        before = None
        if policy.pk is not None:
            before = snapshot(RetrainingPolicy.objects.select_for_update().get(pk=policy.pk))
        policy.save()
        audit_record(
            actor=by, action=AuditAction.RETRAINING_POLICY_UPDATED, obj=policy, before=before, after=snapshot(policy)
        )
    return policy


# --- when ---------------------------------------------------------------------------------------------


def _drift_evidence(policy, version):
    """The last `drift_windows` scheduled drift runs of the version, if every one found dataset drift."""
    if not policy.drift_windows:
        return None
    label = window_parse(settings.MONITORING_DRIFT_WINDOW).label
    runs = list(
        DriftRun.objects.filter(
            model_name=policy.model.name, version=version.version, window=label, kind=DriftRun.Computation.EXACT
        ).order_by("-computed_at", "-id")[: policy.drift_windows]
    )
    if len(runs) < policy.drift_windows or not all(
        run.status == DriftRun.Status.OK and run.dataset_drift for run in runs
    ):
        return None
    # As for alerts, a column counts only with an effect size past the data-drift rule's floor: at large
    # windows a p-value alone would retrain on differences nobody cares about.
    rule = next((r for r in rules_for(model=policy.model) if r.kind == AlertRule.Kind.DATA_DRIFT), None)
    floor = rule.effect_size_floor if rule else 0.1
    evidence = []
    for run in runs:
        columns = column_effect_drifted(list(run.results.filter(role="feature")), floor=floor)
        drifted = sorted(name for (_, name), v in columns.items() if v[0])
        tested = sum(1 for v in columns.values() if v[4] is not None)
        share = len(drifted) / tested if tested else 0.0
        if share < 0.5:
            return None
        evidence.append(
            {
                "id": run.pk,
                "computed_at": run.computed_at.isoformat(),
                "rows": run.rows,
                "share_drifted": share,
                "drifted": drifted,
            }
        )
    return {"drift_runs": evidence, "effect_size_floor": floor}


def _accuracy_evidence(policy, version, now):
    """The last `accuracy_windows` complete hours of the version, if each had enough labels and low accuracy."""
    if policy.accuracy_below is None or not policy.accuracy_windows:
        return None
    end = hour_floor(now)
    hours = []
    for index in range(policy.accuracy_windows):
        hour = end - (index + 1) * HOUR
        rows = HourlyAggregate.objects.filter(model_name=policy.model.name, version=version.version, hour=hour)
        labelled = sum(r.labelled for r in rows)
        correct = sum(r.correct for r in rows)
        if labelled < policy.min_labelled or correct / labelled >= policy.accuracy_below:
            return None
        hours.append({"hour": hour.isoformat(), "labelled": labelled, "accuracy": correct / labelled})
    return {"accuracy_below": policy.accuracy_below, "hours": hours}


def retraining_check(*, model_name: str, now: dt.datetime | None = None) -> Retraining | None:
    """Start a retraining of the model if its policy is on and a trigger holds; returns it, or None.

    Nothing starts while one is open, within the cooldown after the last, or without a Production version.
    """
    now = now or timezone.now()
    policy = RetrainingPolicy.objects.select_related("model", "run_as").filter(model__name=model_name).first()
    if policy is None or not policy.enabled or policy.run_as_id is None:
        return None
    if Retraining.objects.filter(model=policy.model, status__in=Retraining.OPEN_STATUSES).exists():
        return None
    last = Retraining.objects.filter(model=policy.model).order_by("-started_at").first()
    if last is not None and now - last.started_at < dt.timedelta(hours=policy.cooldown_hours):
        return None
    version = registry_selectors.production_version_get(model_name=model_name)
    if version is None:
        return None
    evidence = _drift_evidence(policy, version)
    trigger = Retraining.Trigger.DRIFT
    if evidence is None:
        evidence = _accuracy_evidence(policy, version, now)
        trigger = Retraining.Trigger.ACCURACY
    if evidence is None:
        return None
    return retraining_start(policy=policy, version=version, trigger=trigger, evidence=evidence, now=now)


# --- how ----------------------------------------------------------------------------------------------


def fresh_frame(*, version: ModelVersion) -> tuple[pd.DataFrame, int]:
    """The version's training data plus the labelled feedback rows logged since it was registered.

    Returns (frame, feedback rows added). Feedback rows missing a feature are left out."""
    dataset = version.dataset
    frame = experiment_services.dataset_frame_load(version=dataset)
    features = [column for column in frame.columns if column != dataset.target]
    logged = PredictionLog.objects.filter(
        model_name=version.model.name, actual__isnull=False, created_at__gte=version.created_at, error=""
    ).values_list("inputs", "actual")
    rows = []
    for inputs, actual in logged.iterator(chunk_size=2000):
        if not isinstance(inputs, dict) or any(inputs.get(name) is None for name in features):
            continue
        rows.append({**{name: inputs[name] for name in features}, dataset.target: actual})
    if not rows:
        return frame, 0
    added = pd.DataFrame(rows, columns=frame.columns)
    for column in frame.columns:
        if pd.api.types.is_numeric_dtype(frame[column]):
            added[column] = pd.to_numeric(added[column], errors="coerce")
    added = added.dropna()
    return pd.concat([frame, added.astype(frame.dtypes.to_dict())], ignore_index=True), len(added)


def _open_alert(model):
    return (
        Alert.objects.filter(
            model=model,
            state=Alert.State.FIRING,
            rule__kind__in=[AlertRule.Kind.DATA_DRIFT, AlertRule.Kind.ACCURACY_DROP],
        )
        .order_by("-fired_at")
        .first()
    )


def retraining_start(
    *,
    policy: RetrainingPolicy,
    version: ModelVersion,
    trigger: str,
    evidence: dict[str, Any],
    now: dt.datetime | None = None,
) -> Retraining | None:
    """Store the fresh dataset, launch the run (on the training queue) and record the retraining, audited."""
    now = now or timezone.now()
    by = policy.run_as
    frame, feedback_rows = fresh_frame(version=version)
    content = data.frame_to_csv_bytes(frame)
    dataset, _ = experiment_services.dataset_version_upload(
        name=f"{policy.model.name}-retraining", content=content, target=version.dataset.target, by=by
    )
    params = dict(version.run.params.values_list("key", "value"))
    try:
        with transaction.atomic():
            RetrainingPolicy.objects.select_for_update().get(pk=policy.pk)  # one check-and-start at a time
            if Retraining.objects.filter(model=policy.model, status__in=Retraining.OPEN_STATUSES).exists():
                return None
            retraining = Retraining.objects.create(
                model=policy.model,
                trigger=trigger,
                base_version=version,
                dataset=dataset,
                feedback_rows=feedback_rows,
                alert=_open_alert(policy.model),
                evidence={"trigger": evidence, "base_metrics": version.metrics},
                started_at=now,
            )
            run = experiment_services.run_launch(
                experiment=f"retraining-{policy.model.name}",
                dataset=dataset.sha256,
                algorithm=version.run.algorithm,
                params=params,
                name=f"retrain {version} ({trigger})",
                by=by,
            )
            retraining.run = run
            retraining.save(update_fields=["run"])
            audit_record(
                actor=by,
                action=AuditAction.RETRAINING_STARTED,
                obj=retraining,
                after={
                    "trigger": trigger,
                    "base_version": str(version),
                    "dataset": str(dataset),
                    "rows": len(frame),
                    "feedback_rows": feedback_rows,
                    "run": run.pk,
                    "algorithm": version.run.algorithm,
                    "params": params,
                },
            )
    except IntegrityError:  # another start won the race (the one-open constraint)
        return None
    return retraining


def _end(retraining, status, message, *, by, extra=None):
    retraining.status, retraining.message, retraining.finished_at = status, message[:2000], timezone.now()
    retraining.save()
    audit_record(
        actor=by,
        action=AuditAction.RETRAINING_ENDED,
        obj=retraining,
        after={"status": status, "message": message[:500], **(extra or {})},
    )


def _request_reason(retraining, new_version):
    trigger = retraining.evidence.get("trigger", {})
    if retraining.trigger == Retraining.Trigger.DRIFT:
        runs = trigger.get("drift_runs", [])
        why = f"dataset drift in the last {len(runs)} drift runs"
        if runs:
            why += f" (latest: share {runs[0]['share_drifted']:.2f}, drifted {', '.join(runs[0]['drifted']) or '-'})"
    else:
        hours = trigger.get("hours", [])
        why = f"live accuracy below {trigger.get('accuracy_below')} for {len(hours)} hours" + (
            f" (latest {hours[0]['accuracy']:.3f} on {hours[0]['labelled']} labels)" if hours else ""
        )
    base, new = retraining.base_version.metrics, new_version.metrics
    side = ", ".join(
        f"{key} {base.get(key, float('nan')):.4f} → {new[key]:.4f}"
        for key in ("accuracy", "f1_macro", "roc_auc")
        if isinstance(new.get(key), int | float)
    )
    return (
        f"Retraining #{retraining.pk}: {why}. Trained {retraining.run.algorithm} with {retraining.base_version}'s "
        f"params on {retraining.dataset} ({retraining.dataset.n_rows} rows, {retraining.feedback_rows} of them "
        f"labelled feedback). {retraining.base_version} → {new_version}: {side}."
    )


def retraining_advance(*, retraining_id: int) -> Retraining:
    """Move one open retraining on: once its run finished, register it (gate) and open the request."""
    retraining = (
        Retraining.objects.select_related("model", "base_version", "run", "dataset", "model__retraining")
        .filter(pk=retraining_id)
        .first()
    )
    if retraining is None:
        raise NotFound(f"no retraining #{retraining_id}", field="retraining")
    if retraining.status not in Retraining.OPEN_STATUSES:
        return retraining
    by = retraining.model.retraining.run_as
    run = retraining.run
    if run is None or run.status in (Run.Status.FAILED, Run.Status.KILLED):
        with transaction.atomic():
            _end(retraining, Status.FAILED, f"the run {'was never launched' if run is None else run.status.lower()}: "
                 f"{getattr(run, 'error', '') or ''}".strip(), by=by)  # fmt: skip
        return retraining
    if run.status != Run.Status.FINISHED:
        return retraining
    try:
        new_version = registry_services.model_version_register(
            run_id=run.pk,
            model_name=retraining.model.name,
            by=by,
            description=f"Retrained from {retraining.base_version} on fresh data (retraining #{retraining.pk}).",
        )
    except ApplicationError as exc:
        with transaction.atomic():
            _end(retraining, Status.GATE_FAILED, f"not registered: {exc.message}", by=by,
                 extra={"run_metrics": run.latest_metrics})  # fmt: skip
        return retraining
    with transaction.atomic():
        retraining.new_version = new_version
        retraining.evidence = {**retraining.evidence, "new_metrics": new_version.metrics}
        retraining.save(update_fields=["new_version", "evidence"])
        audit_record(
            actor=by,
            action=AuditAction.RETRAINING_REGISTERED,
            obj=retraining,
            after={"version": str(new_version), "metrics": new_version.metrics},
        )
    stage = retraining.model.retraining.request_stage
    try:
        request = registry_services.promotion_request_create(
            version=new_version, to_stage=stage, reason=_request_reason(retraining, new_version), by=by
        )
    except ApplicationError as exc:
        with transaction.atomic():
            _end(retraining, Status.FAILED, f"registered {new_version}, but no request: {exc.message}", by=by)
        return retraining
    with transaction.atomic():
        retraining.promotion_request = request
        _end(
            retraining,
            Status.REQUESTED,
            f"registered {new_version}; promotion request #{request.pk} to {stage} awaits a decision",
            by=by,
            extra={"version": str(new_version), "request": request.pk},
        )
    return retraining


def retrainings_advance() -> int:
    """Advance every open retraining (the beat task's body); returns how many moved to an end."""
    ended = 0
    for retraining_id in Retraining.objects.filter(status__in=Retraining.OPEN_STATUSES).values_list("pk", flat=True):
        try:
            retraining = retraining_advance(retraining_id=retraining_id)
        except Conflict as exc:
            logger.warning("retraining #%s: %s", retraining_id, exc)
            continue
        except Exception:  # one retraining's fault (a broken artifact, a lost connection) holds up no other
            logger.exception("retraining #%s could not advance; tried again at the next beat", retraining_id)
            continue
        ended += retraining.status not in Retraining.OPEN_STATUSES
    return ended
