"""Alerts: the lifecycle on real aggregates and drift runs (fires once after `for` windows, reminds, resolves,
silenced, acknowledged, a p-value alone never fires), notifications and their retries, API, CLI and admin."""

import datetime as dt
import json
from io import StringIO

import pytest
from django.core import mail
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from core.errors import Conflict, InvalidInput, NotFound, NotPermitted
from governance.models import AuditEntry, WebhookDelivery, WebhookSubscription
from monitoring import selectors, services
from monitoring.models import Alert, AlertNotification, AlertRule, DriftResult, DriftRun
from monitoring.services.aggregates import HOUR, hours_compute
from monitoring.tasks import send_alert_email
from monitoring.windows import hour_floor

pytestmark = pytest.mark.django_db


@pytest.fixture
def t0():
    """The start of an hour well in the past: the tests move `now` forward from it."""
    return hour_floor(timezone.now()) - 12 * HOUR


@pytest.fixture
def hooks():
    return WebhookSubscription.objects.create(name="pager", url="http://127.0.0.1:9/hook", secret="s3cret")


@pytest.fixture
def error_rule(churn_version):
    """churn's own error-rate rule: over 10 % of at least 10 requests in the last hour, for 2 evaluations."""
    services.alert_rules_defaults_ensure()
    return AlertRule.objects.create(
        name="churn errors",
        model=churn_version.model,
        kind=AlertRule.Kind.ERROR_RATE,
        threshold=0.1,
        window_hours=1,
        min_samples=10,
        for_evaluations=2,
        remind_every_hours=2,
        email_to="oncall@example.com",
    )


def _traffic(log_writer, frame, hour, *, good=20, errors=0):
    log_writer.write(frame.head(good), at=hour + dt.timedelta(minutes=10))
    for _ in range(errors):
        log_writer.error("ValueError: bad input", at=hour + dt.timedelta(minutes=20), version=1, mode="primary")
    hours_compute(model_name="churn", start=hour, end=hour + HOUR, sketches=False)


def _evaluate(now):
    return {o.kind: o for o in services.alerts_evaluate(model_name="churn", now=now)}


def _audits(action):
    return list(AuditEntry.objects.filter(action=action).order_by("id"))


def test_fires_once_after_for_windows_reminds_and_resolves(error_rule, log_writer, churn_frame, t0, hooks):
    _traffic(log_writer, churn_frame, t0, errors=10)
    outcome = _evaluate(t0 + HOUR + dt.timedelta(minutes=5))["error_rate"]
    assert outcome.breached is True
    assert outcome.state == "pending"
    alert = Alert.objects.get()
    assert alert.consecutive == 1
    assert not alert.notifications.exists()
    # Evaluated again on the same hour of data: not another window, so still pending.
    assert _evaluate(t0 + HOUR + dt.timedelta(minutes=40))["error_rate"].state == "pending"
    assert Alert.objects.get().consecutive == 1

    _traffic(log_writer, churn_frame, t0 + HOUR, errors=10)
    outcome = _evaluate(t0 + 2 * HOUR + dt.timedelta(minutes=5))["error_rate"]
    assert (outcome.state, outcome.notified) == ("firing", "firing")
    alert.refresh_from_db()
    assert alert.state == "firing"
    assert alert.consecutive == 2
    assert alert.value == pytest.approx(10 / 30)
    assert alert.threshold == 0.1
    assert "33.3% of 30 requests failed" in alert.summary
    assert [e.object_id for e in _audits("alert.fired")] == [str(alert.pk)]
    delivery = WebhookDelivery.objects.get(event="alert.firing")
    assert delivery.payload["data"]["id"] == alert.pk
    assert delivery.payload["data"]["reminder"] is False
    email = AlertNotification.objects.get(event="firing")
    assert email.recipients == ["oncall@example.com"]
    assert "[churn]" in email.subject

    # Still failing an hour later: no second "firing", and no reminder before remind_every_hours (2).
    _traffic(log_writer, churn_frame, t0 + 2 * HOUR, errors=10)
    assert _evaluate(t0 + 3 * HOUR + dt.timedelta(minutes=5))["error_rate"].notified == ""
    # Two hours after the last notification: one reminder.
    _traffic(log_writer, churn_frame, t0 + 3 * HOUR, errors=10)
    assert _evaluate(t0 + 4 * HOUR + dt.timedelta(minutes=5))["error_rate"].notified == "reminder"
    assert WebhookDelivery.objects.filter(event="alert.firing").count() == 2
    assert WebhookDelivery.objects.filter(event="alert.firing").first().payload["data"]["reminder"] is True
    assert Alert.objects.get().reminders == 1
    assert Alert.objects.count() == 1  # deduplicated: one alert per rule and model while it is open

    # Healthy again: resolved, once, with its notifications.
    _traffic(log_writer, churn_frame, t0 + 4 * HOUR, errors=0)
    outcome = _evaluate(t0 + 5 * HOUR + dt.timedelta(minutes=5))["error_rate"]
    assert (outcome.state, outcome.notified) == ("resolved", "resolved")
    assert WebhookDelivery.objects.filter(event="alert.resolved").count() == 1
    assert AlertNotification.objects.filter(event="resolved").count() == 1
    assert len(_audits("alert.resolved")) == 1
    assert len(_audits("alert.fired")) == 1
    assert _evaluate(t0 + 5 * HOUR + dt.timedelta(minutes=30))["error_rate"].alert_id is None
    # The next occurrence is a new alert.
    _traffic(log_writer, churn_frame, t0 + 5 * HOUR, errors=10)
    _evaluate(t0 + 6 * HOUR + dt.timedelta(minutes=5))
    assert Alert.objects.filter(state="pending").count() == 1
    assert Alert.objects.count() == 2


def test_a_single_bad_hour_never_fires_and_too_little_data_changes_nothing(error_rule, log_writer, churn_frame, t0):
    _traffic(log_writer, churn_frame, t0, errors=10)
    _evaluate(t0 + HOUR + dt.timedelta(minutes=5))
    _traffic(log_writer, churn_frame, t0 + HOUR, good=3, errors=2)  # under min_samples (10): no verdict
    outcome = _evaluate(t0 + 2 * HOUR + dt.timedelta(minutes=5))["error_rate"]
    assert outcome.breached is None
    assert outcome.state == "pending"
    _traffic(log_writer, churn_frame, t0 + 2 * HOUR, errors=0)
    assert _evaluate(t0 + 3 * HOUR + dt.timedelta(minutes=5))["error_rate"].state == "resolved"
    assert not _audits("alert.fired")
    assert not AlertNotification.objects.exists()
    assert not WebhookDelivery.objects.exists()


def test_silenced_and_acknowledged_alerts_stay_quiet_but_move(error_rule, log_writer, churn_frame, t0, hooks, engineer):
    _traffic(log_writer, churn_frame, t0, errors=10)
    _evaluate(t0 + HOUR + dt.timedelta(minutes=5))
    alert = Alert.objects.get()
    until = timezone.now() + dt.timedelta(days=1)
    services.alert_silence(alert_id=alert.pk, until=until, reason="known outage upstream", by=engineer)
    _traffic(log_writer, churn_frame, t0 + HOUR, errors=10)
    outcome = _evaluate(t0 + 2 * HOUR + dt.timedelta(minutes=5))["error_rate"]
    assert outcome.state == "firing"
    assert outcome.notified == ""
    assert len(_audits("alert.fired")) == 1
    assert not WebhookDelivery.objects.exists()
    assert not AlertNotification.objects.exists()
    silenced = _audits("alert.silenced")[0]
    assert silenced.actor_name == engineer.username
    assert silenced.reason == "known outage upstream"

    # The silence lifted: the reminder goes; once acknowledged, reminders stop.
    Alert.objects.filter(pk=alert.pk).update(silenced_until=None, last_notified_at=t0)
    _traffic(log_writer, churn_frame, t0 + 2 * HOUR, errors=10)
    assert _evaluate(t0 + 3 * HOUR + dt.timedelta(minutes=5))["error_rate"].notified == "reminder"
    services.alert_acknowledge(alert_id=alert.pk, by=engineer, note="on it")
    assert _audits("alert.acknowledged")[0].reason == "on it"
    _traffic(log_writer, churn_frame, t0 + 5 * HOUR, errors=10)
    assert _evaluate(t0 + 6 * HOUR + dt.timedelta(minutes=5))["error_rate"].notified == ""
    with pytest.raises(Conflict, match="was acknowledged by eli"):
        services.alert_acknowledge(alert_id=alert.pk, by=engineer)


def test_acknowledging_and_silencing_check_the_input_and_the_role(error_rule, scientist, engineer, t0):
    alert = Alert.objects.create(
        rule=error_rule, model=error_rule.model, summary="x", opened_at=t0, last_evaluated_at=t0, state="firing"
    )
    with pytest.raises(NotPermitted, match="dana may not acknowledge alerts"):
        services.alert_acknowledge(alert_id=alert.pk, by=scientist)
    with pytest.raises(InvalidInput, match="reason"):
        services.alert_silence(alert_id=alert.pk, until=timezone.now() + HOUR, reason=" ", by=engineer)
    with pytest.raises(InvalidInput, match="future"):
        services.alert_silence(alert_id=alert.pk, until=timezone.now() - HOUR, reason="r", by=engineer)
    with pytest.raises(NotFound):
        services.alert_acknowledge(alert_id=alert.pk + 100, by=engineer)
    Alert.objects.filter(pk=alert.pk).update(state="resolved")
    with pytest.raises(Conflict, match="already resolved"):
        services.alert_acknowledge(alert_id=alert.pk, by=engineer)


# --- drift: effect sizes, not p-values ----------------------------------------------------------------


def _drift_run(*, ks_p, psi, js, name="monthly_charges", rows=5000, others=("tenure_months",)):
    """A scheduled drift run of churn v1 as the drift job stores it: the deciding test and effect sizes beside."""
    run = DriftRun.objects.create(
        model_name="churn", version=1, window="24h", window_start=timezone.now() - dt.timedelta(hours=24),
        window_end=timezone.now(), kind="exact", status="ok", rows=rows, reference_rows=800,
        dataset_drift=ks_p < 0.05, share_drifted=1 / (1 + len(others)) if ks_p < 0.05 else 0.0,
        n_columns=1 + len(others),
    )  # fmt: skip
    for column, p, effect in [(name, ks_p, (psi, js)), *[(o, 0.5, (0.001, 0.001)) for o in others]]:
        DriftResult.objects.create(run=run, name=column, method="ks", score=p, threshold=0.05, drifted=p <= 0.05,
                                   verdict=True, reference_rows=800, current_rows=rows)  # fmt: skip
        DriftResult.objects.create(run=run, name=column, method="psi", score=effect[0], threshold=0.1,
                                   drifted=effect[0] >= 0.1, reference_rows=800, current_rows=rows)  # fmt: skip
        DriftResult.objects.create(run=run, name=column, method="jensenshannon", score=effect[1], threshold=0.1,
                                   drifted=effect[1] >= 0.1, reference_rows=800, current_rows=rows)  # fmt: skip
    return run


@pytest.fixture
def drift_rule(churn_version):
    services.alert_rules_defaults_ensure()
    return AlertRule.objects.create(
        name="churn charges drift", model=churn_version.model, kind=AlertRule.Kind.DATA_DRIFT, threshold=0.5,
        features=["monthly_charges"], min_samples=100, for_evaluations=1, effect_size_floor=0.1,
    )  # fmt: skip


def test_a_p_value_alone_never_fires(drift_rule):
    _drift_run(ks_p=1e-12, psi=0.004, js=0.02)  # KS flags it at 5,000 rows; the distributions barely differ
    outcome = _evaluate(timezone.now())["data_drift"]
    assert outcome.breached is False
    assert outcome.alert_id is None
    assert "p-value only, not counted: monthly_charges" in outcome.summary
    # The same p-value with an effect size past the floor fires (for_evaluations = 1).
    _drift_run(ks_p=1e-12, psi=0.35, js=0.2)
    outcome = _evaluate(timezone.now())["data_drift"]
    assert outcome.breached is True
    assert outcome.state == "firing"
    assert Alert.objects.get().evidence["drifted"] == ["monthly_charges"]


def test_dataset_drift_counts_the_share_of_features_past_the_floor(churn_version):
    services.alert_rules_defaults_ensure()
    AlertRule.objects.filter(kind="data_drift", model__isnull=True).update(for_evaluations=1)
    _drift_run(ks_p=1e-9, psi=0.5, js=0.3, others=("tenure_months", "age"))  # 1 of 3: under the 0.5 share
    outcome = _evaluate(timezone.now())["data_drift"]
    assert outcome.breached is False
    _drift_run(ks_p=1e-9, psi=0.5, js=0.3, others=("tenure_months",))  # 1 of 2 = 0.5: Evidently's rule
    outcome = _evaluate(timezone.now())["data_drift"]
    assert outcome.breached is True
    assert outcome.state == "firing"
    # A drift run under the rule's minimum rows says nothing: the alert stays.
    _drift_run(ks_p=0.9, psi=0.0, js=0.0, rows=50)
    assert _evaluate(timezone.now())["data_drift"].state == "firing"


def test_a_models_own_rule_replaces_the_default_and_a_disabled_one_silences_the_kind(churn_version):
    services.alert_rules_defaults_ensure()
    kinds = [rule.kind for rule in services.alerts.rules_for(model=churn_version.model)]
    assert kinds == list(AlertRule.Kind.values)
    AlertRule.objects.create(name="no latency for churn", model=churn_version.model, kind="latency", threshold=3,
                             enabled=False)  # fmt: skip
    kinds = [rule.kind for rule in services.alerts.rules_for(model=churn_version.model)]
    assert "latency" not in kinds
    assert len(kinds) == len(AlertRule.Kind.values) - 1


def test_latency_against_the_versions_own_baseline(churn_version, log_writer, churn_frame, t0):
    services.alert_rules_defaults_ensure()
    AlertRule.objects.filter(kind="latency", model__isnull=True).update(for_evaluations=1, min_samples=20)
    for hours in range(1, 5):  # the baseline: 2 ms
        log_writer.write(churn_frame.head(20), at=t0 - hours * HOUR + dt.timedelta(minutes=10), latency_ms=2.0)
    log_writer.write(churn_frame.head(30), at=t0 + dt.timedelta(minutes=10), latency_ms=9.0)
    hours_compute(model_name="churn", start=t0 - 5 * HOUR, end=t0 + HOUR, sketches=False)
    outcome = _evaluate(t0 + HOUR + dt.timedelta(minutes=5))["latency"]
    assert outcome.breached is True
    assert outcome.state == "firing"
    alert = Alert.objects.get(rule__kind="latency")
    assert alert.value == pytest.approx(4.5, rel=0.15)  # 9 ms over 2 ms, to the histogram's 10 % bins


def test_accuracy_drop_from_feedback(churn_version, churn_reference, log_writer, churn_frame, t0):
    services.alert_rules_defaults_ensure()
    AlertRule.objects.filter(kind="accuracy_drop", model__isnull=True).update(for_evaluations=1, min_samples=40)
    records = log_writer.write(churn_frame.head(60), at=t0 + dt.timedelta(minutes=10))
    from serving.models import PredictionLog

    # Every label the opposite of what the model said: live accuracy 0.
    for record in records:
        label = record.labels[0]
        PredictionLog.objects.filter(request_id=record.request_id).update(
            actual="no" if label == "yes" else "yes", feedback_at=t0 + dt.timedelta(minutes=30)
        )
    hours_compute(model_name="churn", start=t0, end=t0 + HOUR, sketches=False)
    outcome = _evaluate(t0 + HOUR + dt.timedelta(minutes=5))["accuracy_drop"]
    assert outcome.breached is True
    assert "live accuracy 0.000" in outcome.summary


def test_no_traffic_only_for_a_deployed_model(churn_version, t0):
    services.alert_rules_defaults_ensure()
    assert _evaluate(t0)["no_traffic"].breached is None  # not deployed: no traffic expected
    from serving.models import Deployment

    deployment = Deployment.objects.create(model=churn_version.model, version=churn_version, environment="production")
    assert _evaluate(t0)["no_traffic"].breached is None  # deployed within the window: too early to say
    Deployment.objects.filter(pk=deployment.pk).update(created_at=t0 - dt.timedelta(hours=7))
    outcome = _evaluate(t0)["no_traffic"]
    assert outcome.breached is True
    assert outcome.state == "firing"


# --- notifications ------------------------------------------------------------------------------------


class FlakyBackend:
    """A mail backend whose server refuses the first FAILURES messages (as an SMTP server that is down)."""

    FAILURES = 2
    calls = 0

    def __init__(self, **kwargs):
        pass

    def send_messages(self, messages):
        FlakyBackend.calls += 1
        if FlakyBackend.calls <= FlakyBackend.FAILURES:
            raise ConnectionRefusedError("[Errno 111] Connection refused")
        mail.outbox.extend(messages)
        return len(messages)


def _notification(error_rule, t0):
    alert = Alert.objects.create(
        rule=error_rule, model=error_rule.model, summary="boom", opened_at=t0, last_evaluated_at=t0, state="firing"
    )
    return AlertNotification.objects.create(
        alert=alert, event="firing", recipients=["oncall@example.com"], subject="[churn] error rate FIRING", body="b"
    )


def test_an_email_is_retried_with_backoff_until_it_goes(error_rule, t0, settings):
    settings.EMAIL_BACKEND = "tests.monitoring.test_alerts.FlakyBackend"
    FlakyBackend.calls = 0
    notification = _notification(error_rule, t0)
    # Run as the worker would (eagerly: each retry runs at once instead of after its countdown).
    assert send_alert_email.apply(args=[notification.pk]).get() == "sent"
    notification.refresh_from_db()
    assert notification.status == "sent"
    assert notification.attempts == 3
    assert [a["outcome"] for a in notification.attempt_log] == [
        "ConnectionRefusedError: [Errno 111] Connection refused",
        "ConnectionRefusedError: [Errno 111] Connection refused",
        "sent",
    ]
    assert mail.outbox[-1].to == ["oncall@example.com"]
    assert services.alerts.alert_email_retry_delay(1) == 30
    assert services.alerts.alert_email_retry_delay(3) == 120
    assert send_alert_email.queue == "alerts"
    assert send_alert_email.acks_late


def test_an_email_fails_after_the_last_attempt(error_rule, t0, settings):
    settings.EMAIL_BACKEND = "tests.monitoring.test_alerts.FlakyBackend"
    settings.ALERT_EMAIL_MAX_ATTEMPTS = 2
    FlakyBackend.calls = 0
    notification = _notification(error_rule, t0)
    assert send_alert_email.apply(args=[notification.pk]).get() == "failed"
    notification.refresh_from_db()
    assert notification.status == "failed"
    assert notification.attempts == 2
    assert "refused" in notification.last_error
    assert services.alert_email_send(notification_id=notification.pk) == "failed"  # not sent again


def test_console_email_on_make_run_and_the_schedule():
    from django.conf import settings as django_settings

    assert "console" in django_settings.EMAIL_BACKEND or "locmem" in django_settings.EMAIL_BACKEND
    schedule = django_settings.CELERY_BEAT_SCHEDULE
    assert schedule["evaluate-alerts"]["task"] == "monitoring.evaluate_alerts"
    assert schedule["advance-retrainings"]["task"] == "monitoring.advance_retrainings"
    from mlops_site.celery import app

    assert app.tasks["monitoring.evaluate_alerts"].queue == "monitoring"


def test_the_hourly_chain_ends_with_the_alert_evaluation(churn_version, monkeypatch):
    from monitoring import tasks

    sent = []
    monkeypatch.setattr(tasks, "chain", lambda *sigs: type("C", (), {"apply_async": lambda self: sent.append(sigs)})())
    monkeypatch.setattr(tasks.services, "models_to_monitor", lambda: ["churn"])
    tasks.schedule_jobs()
    assert [sig.task for sig in sent[0]] == ["monitoring.run_job", "monitoring.run_job", "monitoring.evaluate_alerts"]
    assert sent[0][2].args == ("churn",)


# --- surfaces -----------------------------------------------------------------------------------------


@pytest.fixture
def firing(error_rule, t0):
    return Alert.objects.create(
        rule=error_rule, model=error_rule.model, summary="33% of 30 requests failed", value=0.33, threshold=0.1,
        opened_at=t0, fired_at=t0, last_evaluated_at=t0, state="firing",
    )  # fmt: skip


def test_metrics_show_the_firing_alerts(firing, client):
    from monitoring.metrics import COLLECTOR

    samples = [
        sample for family in COLLECTOR.collect() if family.name == "mlops_alerts_firing" for sample in family.samples
    ]
    assert [(s.labels["model"], s.labels["kind"], s.labels["acknowledged"], s.value) for s in samples] == [
        (firing.model.name, firing.rule.kind, "false", 1.0)
    ]
    firing.state = "resolved"
    firing.save()
    assert not [family.samples for family in COLLECTOR.collect() if family.name == "mlops_alerts_firing"][0]


def test_api_lists_alerts_by_state(firing, scientist, error_rule, t0):
    Alert.objects.create(rule=error_rule, model=error_rule.model, summary="old", opened_at=t0 - HOUR,
                         last_evaluated_at=t0, state="resolved", resolved_at=t0)  # fmt: skip
    client = APIClient()
    client.force_authenticate(scientist)
    body = client.get("/api/v1/alerts?state=firing").json()
    assert body["count"] == 1
    alert = body["results"][0]
    assert alert["id"] == firing.pk
    assert alert["state"] == "firing"
    assert alert["kind"] == "error_rate"
    assert alert["model"] == "churn"
    assert alert["threshold"] == 0.1
    assert alert["url"].endswith(f"/{firing.pk}/change/")
    assert client.get("/api/v1/alerts").json()["count"] == 2
    assert client.get("/api/v1/alerts?model=churn&state=resolved").json()["count"] == 1
    bad = client.get("/api/v1/alerts?state=burning")
    assert bad.status_code == 400
    assert bad.json()["field"] == "state"
    assert client.get("/api/v1/alerts?model=nope").status_code == 404
    assert APIClient().get("/api/v1/alerts").status_code in (401, 403)
    schema = client.get("/api/schema/", {"format": "json"})
    assert schema.status_code == 200
    paths = json.loads(schema.content)["paths"]
    assert "state" in [p["name"] for p in paths["/api/v1/alerts"]["get"]["parameters"]]
    assert [a.pk for a in selectors.alerts_firing(model_name="churn")] == [firing.pk]
    assert list(selectors.alerts_firing(model_name="iris")) == []


def test_cli_lists_acknowledges_and_silences(firing, engineer, scientist):
    out = StringIO()
    call_command("alerts", "list", "--state", "firing", stdout=out)
    assert f"{firing.pk:>5}  firing" in out.getvalue()
    assert "33% of 30 requests failed" in out.getvalue()
    out = StringIO()
    call_command("alerts", "list", "--json", stdout=out)
    assert json.loads(out.getvalue())[0]["id"] == firing.pk
    with pytest.raises(CommandError, match="dana may not acknowledge alerts"):
        call_command("alerts", "ack", str(firing.pk), "--user", scientist.username, stdout=StringIO())
    with pytest.raises(CommandError, match="--user"):
        call_command("alerts", "ack", str(firing.pk), stdout=StringIO())
    call_command("alerts", "ack", str(firing.pk), "--user", engineer.username, "--note", "looking", stdout=StringIO())
    out = StringIO()
    call_command("alerts", "silence", str(firing.pk), "--for", "4h", "--reason", "deploy window", "--user",
                 engineer.username, stdout=out)  # fmt: skip
    firing.refresh_from_db()
    assert firing.acknowledged_by == engineer
    assert dt.timedelta(hours=3.9) < firing.silenced_until - timezone.now() <= dt.timedelta(hours=4)
    with pytest.raises(CommandError, match="not a window|duration"):
        call_command("alerts", "silence", str(firing.pk), "--for", "soon", "--reason", "r", "--user",
                     engineer.username, stdout=StringIO())  # fmt: skip
    with pytest.raises(CommandError, match="no alert #999"):
        call_command("alerts", "ack", "999", "--user", engineer.username, stdout=StringIO())
    out = StringIO()
    call_command("alerts", "list", "--state", "firing", stdout=out)
    assert "acked by eli" in out.getvalue()
    assert "silenced until" in out.getvalue()


def test_cli_evaluate_runs_the_rules_now(error_rule, log_writer, churn_frame):
    hour = hour_floor(timezone.now()) - HOUR
    _traffic(log_writer, churn_frame, hour, errors=10)
    out = StringIO()
    call_command("alerts", "evaluate", "--model", "churn", stdout=out)
    assert "error_rate        HOLDS   33.3% of 30 requests failed" in out.getvalue()
    assert "-> alert #" in out.getvalue()
    assert "pending" in out.getvalue()


def test_admin_acknowledges_silences_and_edits_rules(firing, engineer, error_rule):
    client = Client()
    client.force_login(engineer)
    page = client.get(reverse("admin:monitoring_alert_changelist"))
    assert page.status_code == 200
    assert "33% of 30 requests failed" in page.content.decode()
    assert client.get(reverse("admin:monitoring_alert_change", args=[firing.pk])).status_code == 200
    client.post(
        reverse("admin:monitoring_alert_changelist"), {"action": "acknowledge", "_selected_action": [firing.pk]}
    )
    firing.refresh_from_db()
    assert firing.acknowledged_by == engineer
    response = client.post(
        reverse("admin:monitoring_alert_changelist"), {"action": "silence", "_selected_action": [firing.pk]}
    )
    assert response.status_code == 302
    assert f"ids={firing.pk}" in response["Location"]
    until = (timezone.now() + dt.timedelta(hours=6)).strftime("%Y-%m-%d %H:%M")
    page = client.post(response["Location"], {"until": until, "reason": "maintenance"}, follow=True)
    assert "1 alert(s) silenced" in page.content.decode()
    firing.refresh_from_db()
    assert firing.silence_reason == "maintenance"
    assert AuditEntry.objects.filter(action="alert.silenced", actor_name=engineer.username).exists()

    data = {
        "name": "churn errors", "kind": "error_rate", "model": error_rule.model_id, "enabled": "on", "description": "",
        "threshold": "0.2", "window_hours": "1", "min_samples": "10", "for_evaluations": "3",
        "effect_size_floor": "0.1", "features": "[]", "accuracy_source": "live", "remind_every_hours": "4",
        "email_to": "",
    }  # fmt: skip
    client.post(reverse("admin:monitoring_alertrule_change", args=[error_rule.pk]), data)
    error_rule.refresh_from_db()
    assert error_rule.threshold == 0.2
    assert error_rule.for_evaluations == 3
    entry = AuditEntry.objects.get(action="alert_rule.updated")
    assert entry.before["threshold"] == 0.1
    assert entry.after["threshold"] == 0.2
    page = client.post(reverse("admin:monitoring_alertrule_change", args=[error_rule.pk]), {**data, "threshold": "2"})
    assert "between 0 and 1" in page.content.decode()
    assert client.get(reverse("admin:monitoring_alertnotification_changelist")).status_code == 200


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_on_a_real_worker_the_hourly_chain_fires_the_alert_and_mails_it_on_the_alerts_queue(
    churn_reference, churn_frame, log_writer, tmp_path
):
    import contextlib
    import uuid

    from mlops_site.celery import app as celery_app
    from tests.e2e import processes
    from tests.monitoring.conftest import hours_ago

    services.alert_rules_defaults_ensure()
    AlertRule.objects.filter(kind="data_drift", model__isnull=True).update(
        for_evaluations=1, email_to="oncall@example.com"
    )
    shifted = churn_frame.sample(200, random_state=5).reset_index(drop=True)
    for column in ("tenure_months", "monthly_charges", "total_charges", "support_calls", "age"):
        shifted[column] = shifted[column] * 3 + 10
    log_writer.write(shifted, at=hours_ago(2), per_request=10)
    with celery_app.connection_for_write() as broker, contextlib.suppress(Exception):
        broker.default_channel.queue_purge("monitoring")
        broker.default_channel.queue_purge("alerts")
    worker = processes.start(
        "celery", "-A", "mlops_site", "worker", "--queues", "monitoring,alerts", "--concurrency", "2",
        "--loglevel", "INFO", "--hostname", f"alerts-{uuid.uuid4().hex[:8]}@%h", "--without-gossip",
        "--without-mingle", log=tmp_path / "worker.log", EMAIL_BACKEND="django.core.mail.backends.console.EmailBackend",
    )  # fmt: skip
    try:
        celery_app.send_task("monitoring.schedule_jobs", queue="monitoring")

        def mailed():
            return AlertNotification.objects.filter(status="sent").first()

        notification = processes.wait_for(mailed, timeout=180, process=worker, what="the alert e-mail")
    finally:
        processes.stop(worker)
    alert = notification.alert
    assert alert.state == "firing"
    assert alert.rule.kind == "data_drift"
    assert AuditEntry.objects.filter(action="alert.fired", object_id=str(alert.pk)).count() == 1
    log = (tmp_path / "worker.log").read_text()
    assert "Subject: [churn] data drift FIRING" in log
    assert "monitoring.send_alert_email" in log


def test_notifications_are_queued_on_the_alerts_queue(
    error_rule, log_writer, churn_frame, t0, hooks, django_capture_on_commit_callbacks
):
    from mlops_site.celery import app as celery_app

    AlertRule.objects.filter(pk=error_rule.pk).update(for_evaluations=1)
    _traffic(log_writer, churn_frame, t0, errors=10)
    with celery_app.connection_for_write() as broker:
        broker.default_channel.queue_purge("alerts")
        with django_capture_on_commit_callbacks(execute=True):
            assert _evaluate(t0 + HOUR + dt.timedelta(minutes=5))["error_rate"].notified == "firing"
        tasks = []
        while (message := broker.default_channel.basic_get("alerts", no_ack=True)) is not None:
            tasks.append(message.headers["task"])
    assert sorted(tasks) == ["governance.deliver_webhook", "monitoring.send_alert_email"]
