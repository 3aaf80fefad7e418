"""Retraining when the data moves: started by held drift or low accuracy, on fresh data, registered through the
gate, a promotion request opened with the evidence; one at a time, a cooldown, every step audited, never promoted."""

import datetime as dt
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from core.errors import NotPermitted
from experiments.models import Run
from experiments.tasks import train_run
from governance.models import AuditEntry
from monitoring import services
from monitoring.models import AlertRule, Retraining, RetrainingPolicy
from monitoring.services.aggregates import HOUR, hours_compute
from monitoring.windows import hour_floor
from registry.models import ModelVersion, PromotionRequest
from serving.models import PredictionLog
from tests.monitoring.test_alerts import _drift_run

pytestmark = pytest.mark.django_db


@pytest.fixture
def production(churn_version, promote):
    promote(churn_version)
    return churn_version


@pytest.fixture
def policy(production, engineer, scientist):
    return services.retraining_policy_save(
        policy=RetrainingPolicy(
            model=production.model, enabled=True, drift_windows=3, cooldown_hours=24, run_as=scientist
        ),
        by=engineer,
    )


def _labelled_feedback(log_writer, frame, n, *, at):
    records = log_writer.write(frame.head(n), at=at)
    for record in records:
        PredictionLog.objects.filter(request_id=record.request_id).update(actual=record.labels[0], feedback_at=at)
    return records


def _actions():
    return list(
        AuditEntry.objects.filter(action__startswith="retraining").order_by("id").values_list("action", flat=True)
    )


def test_held_drift_retrains_on_fresh_data_registers_and_requests_but_never_promotes(
    policy, production, log_writer, churn_frame, scientist
):
    _labelled_feedback(log_writer, churn_frame.iloc[100:], 40, at=timezone.now())
    _drift_run(ks_p=1e-9, psi=0.5, js=0.3)
    _drift_run(ks_p=1e-9, psi=0.5, js=0.3)
    assert services.retraining_check(model_name="churn") is None  # 2 of the 3 windows
    _drift_run(ks_p=1e-12, psi=0.01, js=0.02)  # the dataset "drifts" by a p-value alone: not a reason
    assert services.retraining_check(model_name="churn") is None
    _drift_run(ks_p=1e-9, psi=0.5, js=0.3)
    _drift_run(ks_p=1e-9, psi=0.5, js=0.3)
    _drift_run(ks_p=1e-9, psi=0.5, js=0.3)
    retraining = services.retraining_check(model_name="churn")
    assert retraining.status == "training"
    assert retraining.trigger == "drift"
    assert retraining.base_version == production
    assert retraining.feedback_rows == 40
    assert retraining.dataset.n_rows == production.dataset.n_rows + 40
    assert retraining.dataset.source == "upload"
    run = retraining.run
    assert run.status == Run.Status.QUEUED
    assert run.algorithm == production.run.algorithm
    assert dict(run.params.values_list("key", "value")) == dict(production.run.params.values_list("key", "value"))
    assert run.created_by == scientist
    assert len(retraining.evidence["trigger"]["drift_runs"]) == 3
    # One at a time: nothing more starts while it trains.
    _drift_run(ks_p=1e-9, psi=0.5, js=0.3)
    assert services.retraining_check(model_name="churn", now=timezone.now() + dt.timedelta(days=3)) is None
    assert services.retrainings_advance() == 0  # still queued

    train_run.apply(args=[run.pk])  # the training worker
    assert services.retrainings_advance() == 1
    retraining.refresh_from_db()
    assert retraining.status == "requested"
    new = retraining.new_version
    assert new.version == 2
    assert new.stage == ModelVersion.Stage.NONE
    assert new.dataset == retraining.dataset
    request = retraining.promotion_request
    assert request.status == PromotionRequest.Status.PENDING
    assert request.to_stage == "Production"
    assert request.requested_by == scientist
    assert f"Retraining #{retraining.pk}: dataset drift in the last 3 drift runs" in request.reason
    assert "accuracy" in request.reason
    assert "40 of them labelled feedback" in request.reason
    assert retraining.evidence["new_metrics"]["accuracy"] == new.metrics["accuracy"]
    # Never promotes: production is still v1, v2 waits for two people.
    production.refresh_from_db()
    assert production.stage == ModelVersion.Stage.PRODUCTION
    assert ModelVersion.objects.filter(stage=ModelVersion.Stage.PRODUCTION).count() == 1
    assert _actions() == [
        "retraining_policy.updated",
        "retraining.started",
        "retraining.registered",
        "retraining.ended",
    ]
    out = StringIO()
    call_command("alerts", "retrainings", "--model", "churn", stdout=out)
    assert f"#{retraining.pk} churn requested" in out.getvalue()


def test_cooldown_after_the_last_retraining(policy, production):
    for _ in range(3):
        _drift_run(ks_p=1e-9, psi=0.5, js=0.3)
    first = services.retraining_check(model_name="churn")
    Run.objects.filter(pk=first.run_id).update(status=Run.Status.FAILED, error="worker lost")
    services.retrainings_advance()
    first.refresh_from_db()
    assert first.status == "failed"
    assert "failed" in first.message
    assert services.retraining_check(model_name="churn", now=first.started_at + dt.timedelta(hours=23)) is None
    second = services.retraining_check(model_name="churn", now=first.started_at + dt.timedelta(hours=25))
    assert second is not None
    assert second.pk != first.pk


def test_off_by_default_and_without_production_nothing_starts(churn_version, scientist, engineer):
    for _ in range(3):
        _drift_run(ks_p=1e-9, psi=0.5, js=0.3)
    assert services.retraining_check(model_name="churn") is None  # no policy
    policy = RetrainingPolicy.objects.create(model=churn_version.model, run_as=scientist)
    assert policy.enabled is False
    assert services.retraining_check(model_name="churn") is None
    policy.enabled = True
    services.retraining_policy_save(policy=policy, by=engineer)
    assert services.retraining_check(model_name="churn") is None  # nothing in Production to retrain
    with pytest.raises(NotPermitted):
        services.retraining_policy_save(policy=policy, by=scientist)
    policy.run_as = None
    with pytest.raises(Exception, match="run_as"):
        services.retraining_policy_save(policy=policy, by=engineer)


def test_low_accuracy_retrains_and_a_gate_miss_registers_nothing(
    production, scientist, engineer, log_writer, churn_frame
):
    services.retraining_policy_save(
        policy=RetrainingPolicy(
            model=production.model, enabled=True, drift_windows=0, accuracy_below=0.9, accuracy_windows=2,
            min_labelled=10, run_as=scientist,
        ),
        by=engineer,
    )  # fmt: skip
    now = timezone.now()
    for hours in (1, 2):
        hour = hour_floor(now) - hours * HOUR
        records = log_writer.write(churn_frame.head(20), at=hour + dt.timedelta(minutes=5))
        for record in records:  # every label wrong
            wrong = "no" if record.labels[0] == "yes" else "yes"
            PredictionLog.objects.filter(request_id=record.request_id).update(actual=wrong, feedback_at=now)
        hours_compute(model_name="churn", start=hour, end=hour + HOUR, sketches=False)
    retraining = services.retraining_check(model_name="churn", now=now)
    assert retraining.trigger == "accuracy"
    assert len(retraining.evidence["trigger"]["hours"]) == 2
    production.model.metric_thresholds = {"accuracy": 0.9999}
    production.model.save()
    train_run.apply(args=[retraining.run_id])
    services.retrainings_advance()
    retraining.refresh_from_db()
    assert retraining.status == "gate_failed"
    assert "misses the registration gate" in retraining.message
    assert retraining.new_version is None
    assert ModelVersion.objects.count() == 1
    assert _actions()[-1] == "retraining.ended"


def test_the_alert_links_to_its_retraining(policy, production, engineer):
    services.alert_rules_defaults_ensure()
    AlertRule.objects.filter(kind="data_drift").update(for_evaluations=1)
    for _ in range(3):
        _drift_run(ks_p=1e-9, psi=0.5, js=0.3)
    services.alerts_evaluate(model_name="churn")
    retraining = services.retraining_check(model_name="churn")
    assert retraining.alert is not None
    assert retraining.alert.rule.kind == "data_drift"
    assert list(retraining.alert.retrainings.all()) == [retraining]
    assert Retraining.objects.filter(status="training").count() == 1
    client = Client()
    client.force_login(engineer)
    page = client.get(reverse("admin:monitoring_alert_change", args=[retraining.alert.pk])).content.decode()
    assert reverse("admin:monitoring_retraining_change", args=[retraining.pk]) in page
    assert client.get(reverse("admin:monitoring_retraining_change", args=[retraining.pk])).status_code == 200
