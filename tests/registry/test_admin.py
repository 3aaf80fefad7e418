import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from governance.models import AuditEntry, Policy
from governance.services import policy_save
from registry.models import ModelVersion, PromotionRequest

pytestmark = pytest.mark.django_db


@pytest.fixture
def as_user(client):
    def _as(user):
        client.force_login(user)
        return client

    return _as


def test_the_whole_promotion_path_in_the_admin(train, as_user, scientist, approver):
    run = train()
    ds = as_user(scientist)
    # Runs list → "Register the selected run" → form → version page.
    response = ds.post(
        reverse("admin:experiments_run_changelist"), {"action": "register_version", "_selected_action": [run.pk]}
    )
    assert response.status_code == 302
    register_url = response["Location"]
    assert ds.get(register_url).status_code == 200
    response = ds.post(register_url, {"model": "__new__", "new_name": "iris-admin", "description": "from the admin"})
    version = ModelVersion.objects.get(model__name="iris-admin")
    assert response["Location"] == reverse("admin:registry_modelversion_change", args=[version.pk])
    page = ds.get(response["Location"]).content.decode()
    assert "Request promotion" in page
    assert "Training data (reference for drift checks)" in page
    assert "<svg" in page
    # Request promotion.
    response = ds.post(
        reverse("admin:registry_modelversion_request_promotion", args=[version.pk]),
        {"to_stage": "Production", "reason": "ready for checkout"},
    )
    promotion = PromotionRequest.objects.get()
    assert response["Location"] == reverse("admin:registry_promotionrequest_change", args=[promotion.pk])
    page = ds.get(response["Location"]).content.decode()
    assert "dana may not decide promotion requests: it needs the approve_promotion permission" in page
    assert 'value="Approve"' not in page
    # The approver sees the compliance and the buttons, and approves.
    ap = as_user(approver)
    page = ap.get(reverse("admin:registry_promotionrequest_change", args=[promotion.pk])).content.decode()
    assert 'value="Approve"' in page
    assert "score 100%" in page
    ap.post(reverse("admin:registry_promotionrequest_decide", args=[promotion.pk]), {"comment": "ok", "_approve": "1"})
    version.refresh_from_db()
    assert version.stage == "Production"
    entry = AuditEntry.objects.get(action="promotion.approved")
    assert entry.actor_name == "alex"
    assert entry.reason == "ok"
    listing = ap.get(reverse("admin:registry_registeredmodel_changelist")).content.decode()
    assert "iris-admin" in listing
    assert "v1" in listing


def test_the_requester_cannot_approve_in_the_admin(register, as_user, scientist, approver, second_approver):
    version = register()
    approver.user_permissions.add(*Permission.objects.filter(codename="request_promotion"))
    ap = as_user(approver)
    ap.post(
        reverse("admin:registry_modelversion_request_promotion", args=[version.pk]),
        {"to_stage": "Staging", "reason": "try it"},
    )
    promotion = PromotionRequest.objects.get()
    page = ap.get(reverse("admin:registry_promotionrequest_change", args=[promotion.pk])).content.decode()
    assert "another approver must decide it" in page
    response = ap.post(
        reverse("admin:registry_promotionrequest_decide", args=[promotion.pk]), {"_approve": "1"}, follow=True
    )
    assert "another approver must decide it" in response.content.decode()
    promotion.refresh_from_db()
    assert promotion.status == "PENDING"


def test_reject_and_override_in_the_admin(register, as_user, scientist, approver, overrider):
    policy_save(policy=Policy(name="floor", kind=Policy.Kind.PERFORMANCE, min_metrics={"accuracy": 1.01}), by=approver)
    version = register()
    as_user(scientist).post(
        reverse("admin:registry_modelversion_request_promotion", args=[version.pk]),
        {"to_stage": "Production", "reason": "r"},
    )
    promotion = PromotionRequest.objects.get()
    decide = reverse("admin:registry_promotionrequest_decide", args=[promotion.pk])
    response = as_user(approver).post(decide, {"_approve": "1"}, follow=True)
    assert "override_compliance" in response.content.decode()
    page = as_user(overrider).get(reverse("admin:registry_promotionrequest_change", args=[promotion.pk]))
    assert "Override justification" in page.content.decode()
    as_user(overrider).post(decide, {"_approve": "1", "override_justification": "board decision 12"})
    version.refresh_from_db()
    assert version.stage == "Production"
    assert AuditEntry.objects.get(action="promotion.overridden").reason == "board decision 12"


def test_rollback_button(register, promote, as_user, approver):
    v1, v2 = register(), register()
    promote(v1)
    promote(v2)
    ap = as_user(approver)
    page = ap.get(reverse("admin:registry_registeredmodel_change", args=[v1.model_id])).content.decode()
    assert "Roll back production to v1" in page
    url = reverse("admin:registry_registeredmodel_rollback", args=[v1.model_id])
    ap.post(url, {"reason": "pager at 5 pm", "emergency": "on"})
    v1.refresh_from_db()
    assert v1.stage == "Production"
    assert AuditEntry.objects.get(action="production.rolled_back").reason == "pager at 5 pm"


@pytest.mark.parametrize(
    ("role", "url_name", "status"),
    [
        ("auditor", "admin:governance_auditentry_changelist", 200),
        ("auditor", "admin:registry_modelversion_changelist", 200),
        ("auditor", "admin:governance_policy_add", 403),
        ("scientist", "admin:governance_auditentry_changelist", 403),
        ("scientist", "admin:registry_modelversion_changelist", 200),
        ("approver", "admin:governance_policy_add", 200),
        ("approver", "admin:governance_webhooksubscription_add", 403),
        ("engineer", "admin:governance_webhooksubscription_add", 200),
        ("engineer", "admin:django_celery_beat_periodictask_changelist", 200),
        ("engineer", "admin:governance_auditentry_changelist", 403),
    ],
)
def test_each_role_sees_what_it_may(request, as_user, role, url_name, status, register):
    version = register()
    user = request.getfixturevalue(role)
    url = reverse(url_name) + (f"?run={version.run_id}" if url_name.endswith("register") else "")
    assert as_user(user).get(url).status_code == status


def test_version_page_of_a_model_with_categorical_features(train, register, as_user, auditor):
    version = register(run=train(dataset="customer_churn", n_samples=200))
    page = as_user(auditor).get(reverse("admin:registry_modelversion_change", args=[version.pk]))
    assert page.status_code == 200
    assert "categorical" in page.content.decode()
    assert "<svg" in page.content.decode()


def test_auditor_sees_no_promotion_button_and_cannot_request(register, as_user, auditor):
    version = register()
    page = as_user(auditor).get(reverse("admin:registry_modelversion_change", args=[version.pk])).content.decode()
    assert "Request promotion" not in page
    response = as_user(auditor).post(
        reverse("admin:registry_modelversion_request_promotion", args=[version.pk]),
        {"to_stage": "Production", "reason": "r"},
        follow=True,
    )
    assert "Audrey may not request promotions: it needs the request_promotion permission" in response.content.decode()
    assert not PromotionRequest.objects.exists()


def test_policy_edit_in_the_admin_is_audited(as_user, approver):
    response = as_user(approver).post(
        reverse("admin:governance_policy_add"),
        {
            "name": "docs",
            "kind": "documentation",
            "enabled": "on",
            "required_fields": '["owner", "intended_use"]',
            "min_metrics": "{}",
            "require_validated_dataset": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    entry = AuditEntry.objects.get(action="policy.created")
    assert entry.actor_name == "alex"
    assert entry.after["required_fields"] == ["owner", "intended_use"]
    bad = as_user(approver).post(
        reverse("admin:governance_policy_add"),
        {"name": "bad", "kind": "documentation", "required_fields": '["colour"]', "min_metrics": "{}"},
    )
    assert bad.status_code == 200
    assert "Give a list of any of" in bad.content.decode()


def test_register_offers_the_existing_models_and_a_new_one_only_deliberately(production, train, as_user, scientist):
    run = train(n_estimators=7)
    ds = as_user(scientist)
    url = reverse("admin:registry_modelversion_register") + f"?run={run.pk}"
    page = ds.get(url).content.decode()
    assert '<option value="iris-clf"' in page
    assert "A new model…" in page
    # A typo of an existing name is not a new model by accident: a new one needs the choice and a name.
    response = ds.post(url, {"model": "iris-clff"})
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    response = ds.post(url, {"model": "__new__", "new_name": "iris-clf"})
    assert "already exists: choose it above" in response.content.decode()
    response = ds.post(url, {"model": "__new__"})
    assert "Name the new model" in response.content.decode()
    assert ModelVersion.objects.count() == 1
    response = ds.post(url, {"model": "iris-clf"})
    assert response.status_code == 302
    assert ModelVersion.objects.get(run=run).version == 2


def test_the_approver_decides_from_the_top_seeing_the_candidate_beside_production(
    production, train, register, as_user, scientist, approver
):
    candidate = register(run=train(n_estimators=9))
    ds = as_user(scientist)
    assert (
        "Request promotion"
        not in ds.get(reverse("admin:registry_modelversion_change", args=[production.pk])).content.decode()
    )
    form = ds.get(reverse("admin:registry_modelversion_request_promotion", args=[candidate.pk])).content.decode()
    assert 'value="Production"' in form
    ds.post(
        reverse("admin:registry_modelversion_request_promotion", args=[candidate.pk]),
        {"to_stage": "Production", "reason": "more trees"},
    )
    promotion = PromotionRequest.objects.get(version=candidate)
    page = (
        as_user(approver).get(reverse("admin:registry_promotionrequest_change", args=[promotion.pk])).content.decode()
    )
    assert page.index('value="Approve"') < page.index("fieldset-heading")  # above the request's details
    assert f"Candidate v{candidate.version}" in page
    assert f"In Production now: v{production.version}" in page
    assert f"Approving replaces v{production.version} in Production" in page
    assert page.index(">accuracy<") < page.index('value="Approve"')


def test_the_overview_shows_production_what_waits_for_me_runs_and_the_audit_log(
    production, register, train, promote, scientist, approver, auditor, as_user
):
    from registry import services

    candidate = register(run=train(n_estimators=9))
    services.promotion_request_create(version=candidate, to_stage="production", reason="more trees", by=scientist)
    page = as_user(approver).get(reverse("admin:index")).content.decode()
    assert "In production, last 24 hours" in page
    assert f"v{production.version}" in page
    assert "Waiting for your decision" in page
    assert f"iris-clf v{candidate.version} → Production" in page
    assert "Recent changes (audit log)" not in page  # approvers do not read the audit log; auditors do
    assert "No request waits" not in page
    # The requester is not asked to decide their own request.
    assert "You do not decide promotion requests" in as_user(scientist).get(reverse("admin:index")).content.decode()
    page = as_user(auditor).get(reverse("admin:index")).content.decode()
    assert "Recent changes (audit log)" in page
    assert "A stage change was requested" in page


def test_the_overview_counts_what_production_answered(production, scientist, admin_client):
    from django.utils import timezone
    from rest_framework.test import APIClient

    from serving.predlog import writer
    from serving.selectors import production_overview
    from tests.serving.conftest import IRIS_ROW

    api = APIClient()
    api.force_authenticate(scientist)
    assert api.post("/api/v1/models/iris-clf/predict", {"instances": [IRIS_ROW] * 3}, format="json").status_code == 200
    writer.flush()  # the log is written in batches by the serving process's writer
    (primary,) = production_overview(since=timezone.now() - timezone.timedelta(hours=1))
    assert (primary.deployment.version, primary.rows, primary.errors) == (production, 3, 0)
    assert primary.latency_ms > 0
    page = admin_client.get(reverse("admin:index")).content.decode()
    assert '<td class="num">3</td>' in page


def test_the_model_page_says_what_serves_and_links_to_how_it_does(production, admin_client):
    page = admin_client.get(reverse("admin:registry_registeredmodel_change", args=[production.model.pk])).content
    page = page.decode()
    assert "What serves now" in page
    assert f">v{production.version}</a>" in page
    assert f"?model__id__exact={production.model.pk}" in page
    assert "?model_name=iris-clf" in page
    log = reverse("admin:serving_predictionlog_changelist") + "?model_name=iris-clf"
    assert admin_client.get(log).status_code == 200
    deployments = reverse("admin:serving_deployment_changelist") + f"?model__id__exact={production.model.pk}"
    assert admin_client.get(deployments).status_code == 200
