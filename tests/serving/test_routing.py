"""Hot swap, checksum refusal, canary proportions and shadow logging."""

import pytest

from registry import services as registry_services
from serving import services
from serving.models import PredictionLog
from serving.predict import ServedBy, predict
from serving.signal import signal_bump
from tests.serving.conftest import IRIS_ROW

pytestmark = pytest.mark.django_db


def _ask(n=1):
    return predict(model_name="iris-clf", payload=[IRIS_ROW] * n, kind="records")


def test_a_promotion_is_served_on_the_next_request(production, register, promote, django_capture_on_commit_callbacks):
    assert _ask().model.version == 1
    v2 = register()
    with django_capture_on_commit_callbacks(execute=True):
        promote(v2)
    assert _ask().model.version == 2


def test_without_the_signal_the_route_stays_cached(production, register, promote):
    _ask()
    v2 = register()
    promote(v2)  # on_commit callbacks never run in this test's transaction: no signal
    assert _ask().model.version == 1
    signal_bump()
    assert _ask().model.version == 2


def test_a_changed_file_is_refused_and_the_previous_version_keeps_serving(
    production, register, promote, settings, client, django_capture_on_commit_callbacks
):
    settings.SERVING_DEFAULT_MODEL = "iris-clf"
    _ask()
    v2 = register()
    with django_capture_on_commit_callbacks(execute=True):
        promote(v2)
    (settings.ARTIFACT_ROOT / v2.onnx_path).write_bytes(b"not the registered model")
    assert _ask().model.version == 1
    health = client.get("/health").json()
    assert health["status"] == "degraded"
    assert "v2 refused" in health["error"]
    assert "sha256" in health["error"]


def test_a_changed_file_with_nothing_to_fall_back_on_is_a_409(register, promote, settings, client):
    version = register()
    promote(version)
    (settings.ARTIFACT_ROOT / version.artifact_path).write_bytes(b"tampered")
    response = client.post("/api/v1/models/iris-clf/predict", {"instances": [IRIS_ROW]}, format="json")
    assert response.status_code == 409
    assert "cannot be served" in response.json()["error"]


def _restart(monkeypatch):
    """A serving process as after a restart: nothing in memory."""
    from serving.runtime import ServingRuntime

    fresh = ServingRuntime()
    for module in ("serving.runtime", "serving.predict", "serving.api", "serving.v2"):
        monkeypatch.setattr(f"{module}.runtime", fresh)


def test_a_tampered_production_version_after_a_restart_falls_back_to_the_version_last_served(
    production, register, train, promote, settings, client, monkeypatch, django_capture_on_commit_callbacks
):
    settings.SERVING_DEFAULT_MODEL = "iris-clf"
    assert _ask().model.version == 1  # served: recorded as the last good version
    v2 = register(run=train(n_estimators=6))  # other files than v1's
    with django_capture_on_commit_callbacks(execute=True):
        promote(v2)
    for path in (v2.artifact_path, v2.onnx_path):
        (settings.ARTIFACT_ROOT / path).write_bytes(b"tampered")
    _restart(monkeypatch)  # the in-memory last good route is gone with the process

    assert _ask().model.version == 1
    response = client.post("/api/v1/models/iris-clf/predict", {"instances": [IRIS_ROW]}, format="json")
    assert (response.status_code, response.json()["version"]) == (200, 1)
    health = client.get("/health").json()
    assert (health["status"], health["version"]) == ("degraded", 1)
    assert "v2 refused" in health["error"]
    assert "last served" in health["error"]
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 200
    assert ready.json()["version"] == 1
    assert "v2 refused" in ready.json()["reason"]


def test_readiness_is_false_and_says_why_while_nothing_servable_is_loaded(register, promote, settings, client):
    settings.SERVING_DEFAULT_MODEL = "iris-clf"
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 503
    assert ready.json()["ready"] is False
    assert ready.json()["reason"] == "model 'iris-clf' does not exist"
    version = register()
    promote(version)
    (settings.ARTIFACT_ROOT / version.artifact_path).write_bytes(b"tampered")
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 503
    assert "cannot be served" in ready.json()["reason"]
    assert "sha256" in ready.json()["reason"]
    assert client.get("/health").status_code == 503


def test_canary_answers_its_share(production, register, put_on_traffic, django_capture_on_commit_callbacks):
    assert _ask().served_by == "primary"  # the route is cached now: only the change signal makes it see the canary
    canary = register()
    with django_capture_on_commit_callbacks(execute=True):
        put_on_traffic(canary, percent=10, reason="try v2 on 10%")
    answered = [_ask().served_by for _ in range(2000)]
    share = answered.count("canary") / len(answered)
    assert 0.07 < share < 0.13, share
    assert {m for m in answered} == {"primary", "canary"}
    versions = set(PredictionLog.objects.filter(deployment_mode="canary").values_list("version", flat=True))
    assert versions == {2}


def test_shadow_predicts_and_is_logged_but_never_answers(
    production, register, put_on_traffic, django_capture_on_commit_callbacks
):
    _ask()  # a warm route
    shadow = register()
    with django_capture_on_commit_callbacks(execute=True):
        put_on_traffic(shadow, mode="shadow", reason="compare v2 quietly")
    prediction = _ask(3)
    assert (prediction.model.version, prediction.served_by) == (1, ServedBy.PRIMARY)
    logged = PredictionLog.objects.filter(request_id=prediction.request_id)
    assert sorted(logged.values_list("deployment_mode", "version", "row")) == [
        ("primary", 1, 0),
        ("primary", 1, 1),
        ("primary", 1, 2),
        ("shadow", 2, 0),
        ("shadow", 2, 1),
        ("shadow", 2, 2),
    ]


def test_a_retired_canary_stops_answering_on_a_warm_route(
    production, register, put_on_traffic, engineer, django_capture_on_commit_callbacks
):
    from serving.models import Deployment

    with django_capture_on_commit_callbacks(execute=True):
        put_on_traffic(register(), percent=100)
    assert _ask().served_by == "canary"
    with django_capture_on_commit_callbacks(execute=True):
        services.deployment_retire(deployment=Deployment.objects.get(mode="canary"), by=engineer, reason="done")
    assert {_ask().served_by for _ in range(20)} == {"primary"}


def test_a_canary_or_shadow_needs_an_approved_request_and_a_primary(register, production, put_on_traffic, engineer):
    from core.errors import Conflict, InvalidInput

    v2 = register()
    with pytest.raises(InvalidInput, match="at most 100"):
        put_on_traffic(v2, percent=150)
    with pytest.raises(Conflict, match="already the primary"):
        put_on_traffic(production, percent=10)
    with pytest.raises(Conflict, match="nothing answers staging"):
        put_on_traffic(v2, mode="shadow", environment="staging")


def test_retiring_through_a_stage_change(production, register, promote, approver, django_capture_on_commit_callbacks):
    from serving.models import Deployment

    v2 = register()
    with django_capture_on_commit_callbacks(execute=True):
        promote(v2)
    active = Deployment.objects.filter(status="active")
    assert [(d.version.version, d.mode) for d in active] == [(2, "primary")]
    with django_capture_on_commit_callbacks(execute=True):
        registry_services.production_rollback(model_name="iris-clf", by=approver, reason="r", emergency=True)
    assert _ask().model.version == 1


def test_engineer_requests_a_canary_in_the_admin_and_it_serves_once_approved(
    production, register, engineer, approver, auditor
):
    from django.test import Client
    from django.urls import reverse

    from registry.models import PromotionRequest
    from serving.models import Deployment

    v2 = register()
    browser = Client()
    browser.force_login(engineer)
    changelist = browser.get(reverse("admin:serving_deployment_changelist")).content.decode()
    assert "Request canary or shadow" in changelist
    response = browser.post(
        reverse("admin:serving_deployment_request"),
        {"version": v2.pk, "mode": "canary", "traffic_percent": 25, "environment": "production", "reason": "try it"},
    )
    request = PromotionRequest.objects.get(kind="canary")
    assert response["Location"] == reverse("admin:registry_promotionrequest_change", args=[request.pk])
    assert not Deployment.objects.filter(mode="canary").exists()  # nothing on traffic before a second person
    approving = Client()
    approving.force_login(approver)
    approving.post(reverse("admin:registry_promotionrequest_decide", args=[request.pk]), {"_approve": "1"})
    canary = Deployment.objects.get(mode="canary", status="active")
    assert (canary.version, canary.traffic_percent) == (v2, 25.0)
    _ask()
    assert browser.get(reverse("admin:serving_predictionlog_changelist")).status_code == 200
    page = browser.get(reverse("admin:registry_modelversion_change", args=[v2.pk])).content.decode()
    assert "ONNX (onnxruntime)" in page
    auditor_browser = Client()
    auditor_browser.force_login(auditor)
    refused = auditor_browser.post(
        reverse("admin:serving_deployment_request"),
        {"version": v2.pk, "mode": "shadow", "environment": "production", "reason": "peek"},
        follow=True,
    )
    assert "Audrey may not request canary or shadow deployments" in refused.content.decode()


def test_two_models_of_one_run_keep_their_own_onnx_file(train, register, settings):
    from django.core.management import call_command

    from registry.models import ModelVersion

    run = train()
    first = register(name="model-a", run=run)
    second = register(name="model-b", run=run)
    ModelVersion.objects.filter(pk=first.pk).update(serving_form="sklearn")
    call_command("build_fast_forms", "--model", "model-a", "--user", "dana")
    second.refresh_from_db()
    from core.storage import artifact_read_verified

    assert artifact_read_verified(second.onnx_path, second.onnx_sha256)


def test_a_refused_version_is_not_reread_per_request(register, promote, settings, client):
    version = register()
    promote(version)
    path = settings.ARTIFACT_ROOT / version.artifact_path
    good = path.read_bytes()
    path.write_bytes(b"tampered")
    url = "/api/v1/models/iris-clf/predict"
    assert client.post(url, {"instances": [IRIS_ROW]}, format="json").status_code == 409
    path.write_bytes(good)
    assert client.post(url, {"instances": [IRIS_ROW]}, format="json").status_code == 409  # remembered
    signal_bump()
    assert client.post(url, {"instances": [IRIS_ROW]}, format="json").status_code == 200


def test_a_rejected_version_reaches_no_traffic_without_a_second_person(
    production, register, scientist, engineer, approver, django_capture_on_commit_callbacks
):
    from core.errors import NotPermitted
    from serving.models import Deployment

    v2 = register()
    rejected = registry_services.promotion_request_create(version=v2, to_stage="production", reason="r", by=scientist)
    registry_services.promotion_request_reject(request_id=rejected.pk, by=approver, comment="not good enough")
    asked = registry_services.traffic_request_create(
        version=v2, mode="canary", environment="production", traffic_percent=30, reason="just 30 %", by=engineer
    )
    assert not Deployment.objects.filter(version=v2).exists()  # asking is not deploying
    with pytest.raises(NotPermitted, match="may not approve promotions"):
        registry_services.promotion_request_approve(request_id=asked.pk, by=engineer)
    registry_services.promotion_request_reject(request_id=asked.pk, by=approver, comment="it was rejected already")
    assert {_ask().model.version for _ in range(50)} == {1}
    assert not Deployment.objects.filter(version=v2).exists()
    assert not hasattr(services, "deployment_set_canary")  # no way around the request


def test_the_audit_log_shows_each_canary_request_and_decision_with_both_people(
    production, register, put_on_traffic, django_capture_on_commit_callbacks
):
    from governance.models import AuditEntry
    from serving.models import Deployment

    v2 = register()
    request = put_on_traffic(v2, mode="shadow", reason="compare quietly")
    asked = AuditEntry.objects.get(action="traffic.requested", object_id=str(request.pk))
    decided = AuditEntry.objects.get(action="promotion.approved", object_id=str(request.pk))
    deployed = AuditEntry.objects.get(
        action="deployment.created", object_id=str(Deployment.objects.get(mode="shadow").pk)
    )
    assert (asked.actor_name, asked.after["kind"], asked.after["environment"]) == ("eli", "shadow", "production")
    assert (decided.actor_name, decided.after["requested_by"], decided.after["decided_by"]) == ("alex", "eli", "alex")
    assert (deployed.after["requested_by"], deployed.after["approved_by"]) == ("eli", "alex")
    assert deployed.reason == f"request #{request.pk}: compare quietly"


@pytest.mark.parametrize(
    ("percent", "draw", "answered"),
    [(25, 0.2499, "canary"), (25, 0.25, "primary"), (100, 0.9999, "canary"), (0.5, 0.0049, "canary")],
)
def test_a_request_goes_to_the_canary_when_its_draw_falls_below_the_share(
    production, register, put_on_traffic, monkeypatch, django_capture_on_commit_callbacks, percent, draw, answered
):
    """random() in [0, 1) times 100 below the percent: a 100 % canary takes every request, 25 % a quarter."""
    from serving import predict as predict_module

    with django_capture_on_commit_callbacks(execute=True):
        put_on_traffic(register(), percent=percent)
    monkeypatch.setattr(predict_module.random, "random", lambda: draw)
    assert _ask().served_by == answered


def test_each_environment_answers_with_its_own_primary(
    production, register, promote, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        promote(register(), to_stage="staging")
    asked = {
        environment: predict(model_name="iris-clf", payload=[IRIS_ROW], kind="records", environment=environment)
        for environment in ("production", "staging")
    }
    assert {environment: p.model.version for environment, p in asked.items()} == {"production": 1, "staging": 2}
