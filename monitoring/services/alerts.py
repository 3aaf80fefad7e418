"""Alerts: evaluating the rules on what monitoring stored, the pending → firing → resolved lifecycle, and the
people's side (acknowledge, silence, edit a rule), each audited.

An evaluation reads the hourly aggregates of the last `window_hours` complete hours, or the latest scheduled
drift run. What it observed carries a key (the last hour read, the drift run's id): evaluating again before
new data arrived does not count as another consecutive evaluation, so `for_evaluations` means windows of
data, not calls. A rule with too little data (under `min_samples`) changes nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from core.errors import Conflict, InvalidInput, NotFound
from core.permissions import permission_require
from governance.models import AuditAction, WebhookSubscription
from governance.services import audit_record
from governance.services.webhooks import webhook_event_emit
from monitoring import selectors
from monitoring.models import Alert, AlertNotification, AlertRule, DriftResult, DriftRun, HourlyAggregate
from monitoring.services.aggregates import HOUR
from monitoring.stattests import Method
from monitoring.windows import hour_floor, window_parse
from registry.models import RegisteredModel
from serving.models import Deployment

if TYPE_CHECKING:
    from collections.abc import Iterable

    from core.permissions import Actor

logger = logging.getLogger(__name__)
Kind = AlertRule.Kind
State = Alert.State
ALERTS_QUEUE = "alerts"

# The default rule of each kind (model empty), made by migration 0003 and again on evaluation if missing.
# The thresholds are the specification's: accuracy drop > 0.05, latency > 2× baseline, error rate > 10 %.
DEFAULT_RULES = [
    {"name": "accuracy drop (default)", "kind": Kind.ACCURACY_DROP, "threshold": 0.05, "window_hours": 24,
     "min_samples": 50},
    {"name": "latency (default)", "kind": Kind.LATENCY, "threshold": 2.0, "window_hours": 1, "min_samples": 50},
    {"name": "error rate (default)", "kind": Kind.ERROR_RATE, "threshold": 0.1, "window_hours": 1, "min_samples": 50},
    {"name": "data drift (default)", "kind": Kind.DATA_DRIFT, "threshold": 0.5, "window_hours": 24,
     "min_samples": 100},
    {"name": "prediction drift (default)", "kind": Kind.PREDICTION_DRIFT, "threshold": 0.0, "window_hours": 24,
     "min_samples": 100},
    {"name": "no traffic (default)", "kind": Kind.NO_TRAFFIC, "threshold": 0.0, "window_hours": 6, "min_samples": 0,
     "for_evaluations": 1},
]  # fmt: skip

# The latency baseline: the same version's p95 over this period before the window.
LATENCY_BASELINE = dt.timedelta(days=7)
# Methods whose score is an effect size (a distance), not a p-value.
EFFECT_SIZE_METHODS = (Method.PSI.value, Method.JENSENSHANNON.value, Method.WASSERSTEIN.value)


@dataclass(frozen=True)
class Observation:
    """What one evaluation of a rule found: breached (None: not enough data), the value against the threshold."""

    breached: bool | None
    value: float | None
    threshold: float | None
    summary: str
    key: str = ""
    evidence: dict = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluationOutcome:
    """Per rule evaluated on a model: its kind, what was observed, the alert's state after (or None)."""

    rule: str
    kind: str
    breached: bool | None
    summary: str
    alert_id: int | None
    state: str | None
    notified: str = ""


def alert_rules_defaults_ensure() -> int:
    """Create the default rule of each kind that has none (idempotent); returns how many were made."""
    made = 0
    for spec in DEFAULT_RULES:
        if AlertRule.objects.filter(model__isnull=True, kind=spec["kind"]).exists():
            continue
        try:
            with transaction.atomic():
                AlertRule.objects.create(**spec)
                made += 1
        except IntegrityError:  # made meanwhile, or a rule of that name exists
            continue
    return made


def rules_for(*, model: RegisteredModel) -> list[AlertRule]:
    """The enabled rules that apply to `model`: its own of each kind, else the default of that kind."""
    rules = {}
    for rule in AlertRule.objects.filter(model__isnull=True, enabled=True):
        rules[rule.kind] = rule
    for kind in AlertRule.objects.filter(model=model).values_list("kind", flat=True):
        rules.pop(kind, None)  # a model's own rule replaces the default, also when it is switched off
    for rule in AlertRule.objects.filter(model=model, enabled=True):
        rules[rule.kind] = rule
    return [rules[kind] for kind in Kind.values if kind in rules]


# --- observing ---------------------------------------------------------------------------------------


def _complete_hours(rule, now):
    end = hour_floor(now)
    return end - rule.window_hours * HOUR, end


def _observe_accuracy(rule, model, now):
    start, end = _complete_hours(rule, now)
    key = end.isoformat()
    worst = None
    for row in selectors.accuracy_summary(model_name=model.name, start=start, end=end):
        validation = row["validation_accuracy"]
        if rule.accuracy_source == AlertRule.AccuracySource.LIVE:
            measured, sample = row["accuracy"], row["labelled"]
        else:
            measured, sample = row["estimated_accuracy"], row["rows"]
        if validation is None or measured is None or sample < rule.min_samples:
            continue
        drop = validation - measured
        if worst is None or drop > worst[0]:
            worst = (drop, row, measured, sample)
    if worst is None:
        return Observation(None, None, rule.threshold, f"not enough data (under {rule.min_samples} rows)", key)
    drop, row, measured, sample = worst
    source = "live" if rule.accuracy_source == AlertRule.AccuracySource.LIVE else "estimated"
    return Observation(
        drop > rule.threshold,
        drop,
        rule.threshold,
        f"v{row['version']} {source} accuracy {measured:.3f} vs validation {row['validation_accuracy']:.3f} "
        f"(drop {drop:.3f}, {sample} rows, {rule.window_hours} h)",
        key,
        {"version": row["version"], "accuracy": measured, "validation_accuracy": row["validation_accuracy"],
         "rows": sample, "source": source, "from": start.isoformat(), "to": end.isoformat()},
    )  # fmt: skip


def _histogram(hours):
    merged = {}
    for hour in hours:
        for key, n in hour.latency_histogram.items():
            merged[key] = merged.get(key, 0) + n
    return merged


def _observe_latency(rule, model, now):
    start, end = _complete_hours(rule, now)
    key = end.isoformat()
    window = list(
        HourlyAggregate.objects.filter(model_name=model.name, hour__gte=start, hour__lt=end, version__gt=0).exclude(
            deployment_mode="shadow"
        )
    )
    worst = None
    for version in sorted({h.version for h in window}):
        hours = [h for h in window if h.version == version]
        requests = sum(h.requests - h.errors for h in hours)
        if requests < rule.min_samples:
            continue
        before = list(
            HourlyAggregate.objects.filter(
                model_name=model.name, version=version, hour__gte=start - LATENCY_BASELINE, hour__lt=start
            ).exclude(deployment_mode="shadow")
        )
        baseline_requests = sum(h.requests - h.errors for h in before)
        if baseline_requests < rule.min_samples:
            continue
        p95 = selectors.latency_percentiles(_histogram(hours), (95,))[0]
        baseline = selectors.latency_percentiles(_histogram(before), (95,))[0]
        if not p95 or not baseline:
            continue
        ratio = p95 / baseline
        if worst is None or ratio > worst[0]:
            worst = (ratio, version, p95, baseline, requests, baseline_requests)
    if worst is None:
        return Observation(
            None, None, rule.threshold, f"not enough data (under {rule.min_samples} requests, or no baseline)", key
        )
    ratio, version, p95, baseline, requests, baseline_requests = worst
    return Observation(
        ratio > rule.threshold,
        ratio,
        rule.threshold,
        f"v{version} p95 {p95:.1f} ms is {ratio:.2f}× its baseline {baseline:.1f} ms ({requests} requests, "
        f"{rule.window_hours} h)",
        key,
        {"version": version, "p95_ms": p95, "baseline_p95_ms": baseline, "requests": requests,
         "baseline_requests": baseline_requests, "from": start.isoformat(), "to": end.isoformat()},
    )  # fmt: skip


def _traffic(model, start, end):
    totals = HourlyAggregate.objects.filter(model_name=model.name, hour__gte=start, hour__lt=end).aggregate(
        requests=Sum("requests"), errors=Sum("errors")
    )
    return totals["requests"] or 0, totals["errors"] or 0


def _observe_error_rate(rule, model, now):
    start, end = _complete_hours(rule, now)
    requests, errors = _traffic(model, start, end)
    key = end.isoformat()
    if requests < rule.min_samples or requests == 0:
        return Observation(None, None, rule.threshold, f"not enough data ({requests} requests)", key)
    rate = errors / requests
    return Observation(
        rate > rule.threshold,
        rate,
        rule.threshold,
        f"{rate:.1%} of {requests} requests failed in the last {rule.window_hours} h",
        key,
        {"requests": requests, "errors": errors, "from": start.isoformat(), "to": end.isoformat()},
    )


def _observe_no_traffic(rule, model, now):
    start, end = _complete_hours(rule, now)
    key = end.isoformat()
    deployed = Deployment.objects.filter(model=model, status=Deployment.Status.ACTIVE).order_by("created_at").first()
    if deployed is None:
        return Observation(None, None, None, "not deployed: no traffic expected", key)
    if deployed.created_at > start:  # silence since a deployment minutes old says nothing yet
        return Observation(None, None, None, f"deployed less than {rule.window_hours} h ago", key)
    requests, _ = _traffic(model, start, end)
    return Observation(
        requests == 0,
        float(requests),
        0.0,
        f"{requests} requests in the last {rule.window_hours} h",
        key,
        {"requests": requests, "from": start.isoformat(), "to": end.isoformat()},
    )


def column_effect_drifted(
    results: Iterable[DriftResult], *, floor: float
) -> dict[tuple[str, str], tuple[bool, float | None, str, float | None]]:
    """{(role, column): (drifted, effect size, deciding method, score)} of a drift run's results.

    A column drifts for alerts only if its deciding test says so and its effect size (the deciding score
    when it is a distance, else the largest of PSI and Jensen–Shannon stored beside it) reaches `floor`:
    a p-value alone never fires an alert."""
    columns = {}
    effects = {}
    for result in results:
        if result.method in EFFECT_SIZE_METHODS and result.score is not None:
            key = (result.role, result.name)
            effects[key] = max(effects.get(key, 0.0), result.score)
    for result in results:
        if not result.verdict:
            continue
        key = (result.role, result.name)
        if result.method in EFFECT_SIZE_METHODS:
            effect = result.score
        else:
            effect = effects.get(key)
        drifted = bool(result.drifted) and effect is not None and effect >= floor
        columns[key] = (drifted, effect, result.method, result.score, result.drifted)
    return columns


def _latest_drift_runs(model):
    """The latest scheduled (exact, default window) drift run of each deployed or serving version."""
    label = window_parse(settings.MONITORING_DRIFT_WINDOW).label
    runs = {}
    for run in DriftRun.objects.filter(model_name=model.name, window=label, kind=DriftRun.Computation.EXACT).order_by(
        "-computed_at", "-id"
    )[:50]:
        runs.setdefault(run.version, run)
    return list(runs.values())


def _observe_drift(rule, model, now):
    runs = [
        run for run in _latest_drift_runs(model) if run.status == DriftRun.Status.OK and run.rows >= rule.min_samples
    ]
    key = ",".join(str(run.pk) for run in sorted(runs, key=lambda r: r.pk))
    if not runs:
        return Observation(None, None, rule.threshold, f"not enough data (no drift run of {rule.min_samples}+ rows)")
    results = DriftResult.objects.filter(run__in=runs).only(
        "run_id", "name", "role", "method", "score", "drifted", "verdict"
    )
    by_run = {}
    for result in results:
        by_run.setdefault(result.run_id, []).append(result)
    worst = None
    for run in runs:
        columns = column_effect_drifted(by_run.get(run.pk, []), floor=rule.effect_size_floor)
        prediction = rule.kind == Kind.PREDICTION_DRIFT
        if prediction:
            chosen = {k: v for k, v in columns.items() if k[0] != "feature"}
            drifted = sorted(name for (_, name), v in chosen.items() if v[0])
            breached = bool(drifted)
            value = float(len(drifted))
        else:
            features = {k[1]: v for k, v in columns.items() if k[0] == "feature"}
            if rule.features:
                drifted = sorted(name for name in rule.features if features.get(name, (False,))[0])
                breached = bool(drifted)
                value = float(len(drifted))
            else:
                drifted = sorted(name for name, v in features.items() if v[0])
                tested = sum(1 for v in features.values() if v[4] is not None)
                value = len(drifted) / tested if tested else 0.0
                breached = tested > 0 and value >= rule.threshold
        p_only = sorted(
            name
            for (role, name), v in columns.items()
            if v[4] and not v[0] and v[2] not in EFFECT_SIZE_METHODS and (role == "feature") != prediction
        )
        candidate = (breached, value, run, drifted, p_only)
        if worst is None or (breached, value) > (worst[0], worst[1]):
            worst = candidate
    breached, value, run, drifted, p_only = worst
    what = "predicted classes / confidence" if rule.kind == Kind.PREDICTION_DRIFT else "features"
    summary = f"v{run.version}: drifted {what}: {', '.join(drifted) or 'none'} (effect size ≥ {rule.effect_size_floor})"
    if p_only:
        summary += f"; p-value only, not counted: {', '.join(p_only)}"
    return Observation(
        breached,
        value,
        rule.threshold if rule.kind == Kind.DATA_DRIFT and not rule.features else None,
        summary[:300],
        key,
        {"version": run.version, "drift_run": run.pk, "window": run.window, "rows": run.rows, "drifted": drifted,
         "p_value_only": p_only, "share_drifted": run.share_drifted, "dataset_drift": run.dataset_drift},
    )  # fmt: skip


_OBSERVERS = {
    Kind.ACCURACY_DROP: _observe_accuracy,
    Kind.LATENCY: _observe_latency,
    Kind.ERROR_RATE: _observe_error_rate,
    Kind.DATA_DRIFT: _observe_drift,
    Kind.PREDICTION_DRIFT: _observe_drift,
    Kind.NO_TRAFFIC: _observe_no_traffic,
}


def alert_rule_observe(*, rule: AlertRule, model: RegisteredModel, now: dt.datetime | None = None) -> Observation:
    """What `rule` finds on `model` now, without changing anything."""
    return _OBSERVERS[rule.kind](rule, model, now or timezone.now())


# --- the lifecycle ------------------------------------------------------------------------------------


def alert_payload(alert: Alert) -> dict[str, Any]:
    """An alert as the API, the webhooks and `manage.py alerts --json` show it."""
    return {
        "id": alert.pk,
        "model": alert.model.name,
        "rule": alert.rule.name,
        "kind": alert.rule.kind,
        "state": alert.state,
        "summary": alert.summary,
        "value": alert.value,
        "threshold": alert.threshold,
        "consecutive": alert.consecutive,
        "opened_at": alert.opened_at,
        "fired_at": alert.fired_at,
        "resolved_at": alert.resolved_at,
        "acknowledged_at": alert.acknowledged_at,
        "acknowledged_by": alert.acknowledged_by.get_username() if alert.acknowledged_by else None,
        "silenced_until": alert.silenced_until,
        "silence_reason": alert.silence_reason,
        "evidence": alert.evidence,
        "url": f"{settings.SITE_URL}/admin/monitoring/alert/{alert.pk}/change/",
    }


def _email_queue(notification_ids):
    from monitoring.tasks import send_alert_email

    for notification_id in notification_ids:
        try:
            send_alert_email.apply_async(args=[notification_id], queue=ALERTS_QUEUE)
        except Exception as exc:  # broker down: retry-stalled-alert-emails queues it later
            logger.warning("could not queue alert e-mail %s: %s", notification_id, exc)


def _notify(alert, event, now):
    """Webhook deliveries and an e-mail about `alert` (inside the transaction of the change)."""
    reminder = event == AlertNotification.Event.REMINDER
    webhook_event = (
        WebhookSubscription.Event.ALERT_RESOLVED if event == AlertNotification.Event.RESOLVED
        else WebhookSubscription.Event.ALERT_FIRING
    )  # fmt: skip
    webhook_event_emit(event=webhook_event, data={**alert_payload(alert), "reminder": reminder}, queue=ALERTS_QUEUE)
    recipients = alert.rule.recipients()
    if recipients:
        verb = {"firing": "FIRING", "reminder": "still FIRING", "resolved": "resolved"}[event]
        subject = f"[{alert.model.name}] {alert.rule.get_kind_display().split(' (')[0]} {verb}"
        body = "\n".join(
            [
                f"Alert #{alert.pk} on {alert.model.name}: {verb}.",
                f"Rule: {alert.rule.name}",
                f"What it found: {alert.summary}",
                f"Opened {alert.opened_at:%Y-%m-%d %H:%M} UTC"
                + (f", firing since {alert.fired_at:%Y-%m-%d %H:%M} UTC" if alert.fired_at else ""),
                *([f"Resolved {alert.resolved_at:%Y-%m-%d %H:%M} UTC"] if alert.resolved_at else []),
                "",
                f"Acknowledge or silence it: {alert_payload(alert)['url']}",
            ]
        )
        notification = AlertNotification.objects.create(
            alert=alert, event=event, recipients=recipients, subject=subject[:300], body=body
        )
        transaction.on_commit(lambda: _email_queue([notification.pk]))
    alert.last_notified_at = now
    if reminder:
        alert.reminders += 1
    return event


def _reminder_due(alert, now):
    every = alert.rule.remind_every_hours
    return bool(
        every
        and alert.acknowledged_at is None
        and alert.last_notified_at is not None
        and now - alert.last_notified_at >= dt.timedelta(hours=every)
    )


def _apply(rule, model, observation, now):
    """Move the open alert of (rule, model) by what was observed; returns (alert or None, notified event)."""
    with transaction.atomic():
        alert = Alert.objects.select_for_update().filter(rule=rule, model=model, state__in=Alert.OPEN_STATES).first()
        notified = ""
        if observation.breached is None:
            if alert is not None:
                alert.last_evaluated_at = now
                if alert.state == State.FIRING and not alert.silenced(now) and _reminder_due(alert, now):
                    notified = _notify(alert, AlertNotification.Event.REMINDER, now)
                alert.save()
            return alert, notified
        if observation.breached:
            if alert is None:
                alert = Alert.objects.create(
                    rule=rule,
                    model=model,
                    state=State.PENDING,
                    consecutive=1,
                    opened_at=now,
                    last_evaluated_at=now,
                    value=observation.value,
                    threshold=observation.threshold,
                    summary=observation.summary[:300],
                    evidence={**observation.evidence, "key": observation.key},
                )
            else:
                if observation.key != alert.evidence.get("key"):
                    alert.consecutive += 1
                alert.value, alert.threshold = observation.value, observation.threshold
                alert.summary = observation.summary[:300]
                alert.evidence = {**observation.evidence, "key": observation.key}
                alert.last_evaluated_at = now
            if alert.state == State.PENDING and alert.consecutive >= rule.for_evaluations:
                alert.state, alert.fired_at = State.FIRING, now
                audit_record(
                    actor=None,
                    actor_name="monitoring",
                    action=AuditAction.ALERT_FIRED,
                    obj=alert,
                    after={"rule": rule.name, "model": model.name, "summary": alert.summary, "value": alert.value},
                )
                if not alert.silenced(now):
                    notified = _notify(alert, AlertNotification.Event.FIRING, now)
            elif alert.state == State.FIRING and not alert.silenced(now) and _reminder_due(alert, now):
                notified = _notify(alert, AlertNotification.Event.REMINDER, now)
            alert.save()
            return alert, notified
        if alert is None:
            return None, ""
        was_firing = alert.state == State.FIRING
        alert.state, alert.resolved_at, alert.last_evaluated_at = State.RESOLVED, now, now
        alert.summary = f"cleared: {observation.summary}"[:300]
        if was_firing:
            audit_record(
                actor=None,
                actor_name="monitoring",
                action=AuditAction.ALERT_RESOLVED,
                obj=alert,
                before={"state": State.FIRING},
                after={"state": State.RESOLVED, "summary": alert.summary},
            )
            if not alert.silenced(now):
                notified = _notify(alert, AlertNotification.Event.RESOLVED, now)
        alert.save()
        return alert, notified


def alerts_evaluate(*, model_name: str, now: dt.datetime | None = None) -> list[EvaluationOutcome]:
    """Evaluate every rule that applies to the model and move its alerts (the beat task's body)."""
    now = now or timezone.now()
    model = RegisteredModel.objects.filter(name=model_name).first()
    if model is None:
        raise NotFound(f"no registered model {model_name!r}", field="model")
    alert_rules_defaults_ensure()
    outcomes = []
    for rule in rules_for(model=model):
        observation = alert_rule_observe(rule=rule, model=model, now=now)
        alert, notified = _apply(rule, model, observation, now)
        outcomes.append(
            EvaluationOutcome(
                rule=rule.name,
                kind=rule.kind,
                breached=observation.breached,
                summary=observation.summary,
                alert_id=alert.pk if alert else None,
                state=alert.state if alert else None,
                notified=notified,
            )
        )
    return outcomes


# --- people's side ------------------------------------------------------------------------------------


def _alert_locked(alert_id):
    alert = Alert.objects.select_for_update().select_related("rule", "model").filter(pk=alert_id).first()
    if alert is None:
        raise NotFound(f"no alert #{alert_id}", field="alert")
    return alert


def alert_acknowledge(*, alert_id: int, by: Actor, note: str = "") -> Alert:
    """Someone takes an open alert in hand: no more reminders (it still notifies when it resolves); audited."""
    permission_require(by, "monitoring.acknowledge_alert", doing="acknowledge alerts")
    with transaction.atomic():
        alert = _alert_locked(alert_id)
        if alert.state == State.RESOLVED:
            raise Conflict(f"alert #{alert.pk} is already resolved", field="alert")
        if alert.acknowledged_at is not None:
            raise Conflict(
                f"alert #{alert.pk} was acknowledged by {alert.acknowledged_by} "
                f"at {alert.acknowledged_at:%Y-%m-%d %H:%M}",
                field="alert",
            )
        alert.acknowledged_at, alert.acknowledged_by = timezone.now(), by
        alert.save(update_fields=["acknowledged_at", "acknowledged_by"])
        audit_record(
            actor=by,
            action=AuditAction.ALERT_ACKNOWLEDGED,
            obj=alert,
            after={"state": alert.state, "summary": alert.summary},
            reason=note or "",
        )
    return alert


def alert_silence(*, alert_id: int, until: dt.datetime, reason: str, by: Actor) -> Alert:
    """No notification about an open alert before `until` (it still moves state); audited with the reason."""
    permission_require(by, "monitoring.acknowledge_alert", doing="silence alerts")
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput("is required: say why the alert may stay quiet", field="reason")
    if until is None:
        raise InvalidInput("is required", field="until")
    if timezone.is_naive(until):
        until = timezone.make_aware(until, dt.UTC)
    if until <= timezone.now():
        raise InvalidInput("must be in the future", field="until")
    with transaction.atomic():
        alert = _alert_locked(alert_id)
        if alert.state == State.RESOLVED:
            raise Conflict(f"alert #{alert.pk} is already resolved", field="alert")
        before = {"silenced_until": alert.silenced_until}
        alert.silenced_until, alert.silence_reason, alert.silenced_by = until, reason, by
        alert.save(update_fields=["silenced_until", "silence_reason", "silenced_by"])
        audit_record(
            actor=by,
            action=AuditAction.ALERT_SILENCED,
            obj=alert,
            before=before,
            after={"silenced_until": until, "state": alert.state},
            reason=reason,
        )
    return alert


def _rule_snapshot(rule):
    return {
        "name": rule.name,
        "model": rule.model.name if rule.model_id else None,
        "kind": rule.kind,
        "enabled": rule.enabled,
        "threshold": rule.threshold,
        "window_hours": rule.window_hours,
        "min_samples": rule.min_samples,
        "for_evaluations": rule.for_evaluations,
        "effect_size_floor": rule.effect_size_floor,
        "features": rule.features,
        "accuracy_source": rule.accuracy_source,
        "remind_every_hours": rule.remind_every_hours,
        "email_to": rule.email_to,
    }


def alert_rule_save(*, rule: AlertRule, by: Actor) -> AlertRule:
    """Create or edit an alert rule (the admin's form), validated and audited."""
    creating = rule.pk is None
    permission_require(
        by,
        "monitoring.add_alertrule" if creating else "monitoring.change_alertrule",
        doing="create alert rules" if creating else "edit alert rules",
    )
    rule.full_clean()
    with transaction.atomic():
        before = None if creating else _rule_snapshot(AlertRule.objects.select_for_update().get(pk=rule.pk))
        rule.save()
        audit_record(
            actor=by,
            action=AuditAction.ALERT_RULE_CREATED if creating else AuditAction.ALERT_RULE_UPDATED,
            obj=rule,
            before=before,
            after=_rule_snapshot(rule),
        )
    return rule


# --- e-mail -------------------------------------------------------------------------------------------


def alert_email_retry_delay(attempts: int) -> int:
    """Seconds before the next attempt: the base doubled per attempt so far (30 s, 60 s, 2 min, ...)."""
    return settings.ALERT_EMAIL_RETRY_BASE_SECONDS * 2 ** max(attempts - 1, 0)


def alert_email_send(*, notification_id: int) -> str:
    """Send one pending alert e-mail once with Django's mail and record the attempt; returns its status."""
    from django.core.mail import EmailMessage

    with transaction.atomic():
        notification = AlertNotification.objects.select_for_update().get(pk=notification_id)
        if notification.status != AlertNotification.Status.PENDING:
            return notification.status
        notification.attempts += 1
        notification.last_attempt_at = timezone.now()
        notification.save(update_fields=["attempts", "last_attempt_at"])
    error = ""
    try:
        EmailMessage(
            subject=notification.subject,
            body=notification.body,
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=notification.recipients,
        ).send(fail_silently=False)
    except Exception as exc:  # SMTP refusals, a server down, a timeout: each backend raises its own
        error = f"{type(exc).__name__}: {exc}"
    if not error:
        status = AlertNotification.Status.SENT
    elif notification.attempts >= settings.ALERT_EMAIL_MAX_ATTEMPTS:
        status = AlertNotification.Status.FAILED
    else:
        status = AlertNotification.Status.PENDING
    log = [*notification.attempt_log, {"at": timezone.now().isoformat(), "outcome": error or "sent"}]
    AlertNotification.objects.filter(pk=notification.pk).update(
        status=status, last_error=error, attempt_log=log, sent_at=timezone.now() if not error else None
    )
    return status


def alert_emails_retry_stalled(*, now: dt.datetime | None = None) -> int:
    """Queue again pending e-mails whose task was lost (broker down at commit, worker gone); returns how many."""
    now = now or timezone.now()
    stalled_before = now - dt.timedelta(seconds=alert_email_retry_delay(settings.ALERT_EMAIL_MAX_ATTEMPTS) + 60)
    ids = list(
        AlertNotification.objects.filter(
            status=AlertNotification.Status.PENDING, created_at__lt=now - dt.timedelta(minutes=1)
        )
        .exclude(last_attempt_at__gte=stalled_before)
        .values_list("pk", flat=True)[:500]
    )
    _email_queue(ids)
    return len(ids)
