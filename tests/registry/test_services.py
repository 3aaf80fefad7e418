import pytest

from core.errors import Conflict, InvalidInput, NotFound, NotPermitted, Unprocessable
from experiments.models import Run
from governance.models import AuditEntry, Policy
from governance.services import audit_chain_verify, policy_save
from registry import selectors, services
from registry.models import ModelVersion, PromotionRequest, RegisteredModel

pytestmark = pytest.mark.django_db

Stage = ModelVersion.Stage


def _actions():
    return list(AuditEntry.objects.order_by("id").values_list("action", flat=True))


def test_register_numbers_versions_and_records_lineage(register, scientist):
    first = register()
    second = register()
    assert (first.version, second.version) == (1, 2)
    assert first.stage == Stage.NONE
    assert first.artifact_sha256 == first.run.model_sha256
    assert first.metrics["accuracy"] == first.run.latest_metrics["accuracy"]
    assert [f["name"] for f in first.signature["features"]] == first.dataset.feature_names
    assert first.signature["classes"] == ["setosa", "versicolor", "virginica"]
    feature = first.reference_stats["features"][first.dataset.feature_names[0]]
    assert feature["kind"] == "numeric"
    assert sum(feature["histogram"]["counts"]) == 150
    model = RegisteredModel.objects.get(name="iris-clf")
    assert model.owner == scientist
    assert [a for a in _actions() if a.startswith(("model.", "version."))] == [
        "model.created",
        "version.registered",
        "version.registered",
    ]
    entry = AuditEntry.objects.filter(action="version.registered").order_by("id").last()
    assert entry.actor_name == "dana"
    assert entry.after["run_id"] == second.run_id


def test_gate_refuses_a_run_below_the_threshold_and_writes_nothing(register, train, scientist):
    register()
    model = RegisteredModel.objects.get(name="iris-clf")
    services.registered_model_update(model=model, by=scientist, changes={"metric_thresholds": {"accuracy": 1.01}})
    run = train()
    count = AuditEntry.objects.count()
    with pytest.raises(Unprocessable) as refused:
        services.model_version_register(run_id=run.pk, model_name="iris-clf", by=scientist)
    assert "accuracy" in refused.value.message
    assert "below the minimum 1.01" in refused.value.message
    assert model.versions.count() == 1
    assert AuditEntry.objects.count() == count


def test_gate_reads_losses_as_maximums(register, train, scientist):
    register()
    model = RegisteredModel.objects.get(name="iris-clf")
    services.registered_model_update(model=model, by=scientist, changes={"metric_thresholds": {"log_loss": 1e-9}})
    with pytest.raises(Unprocessable, match="log_loss .* is above the maximum"):
        services.model_version_register(run_id=train().pk, model_name="iris-clf", by=scientist)


def test_register_refuses_failed_run_sweep_parent_unknown_run_and_bad_name(train, scientist):
    failed = train()
    Run.objects.filter(pk=failed.pk).update(status=Run.Status.FAILED)
    with pytest.raises(Conflict, match="is FAILED"):
        services.model_version_register(run_id=failed.pk, model_name="m", by=scientist)
    sweep = train(params={}, sweep={"n_estimators": [3, 4]})
    with pytest.raises(InvalidInput, match=f"register its best member, run {sweep.best_child_id}"):
        services.model_version_register(run_id=sweep.pk, model_name="m", by=scientist)
    with pytest.raises(NotFound):
        services.model_version_register(run_id=999999, model_name="m", by=scientist)
    with pytest.raises(InvalidInput) as bad:
        services.model_version_register(run_id=failed.pk, model_name="has space/slash", by=scientist)
    assert bad.value.field == "name"
    assert not ModelVersion.objects.exists()


def test_register_refuses_a_model_file_that_changed(train, scientist, settings):
    run = train()
    (settings.ARTIFACT_ROOT / run.model_path).write_bytes(b"tampered")
    with pytest.raises(Conflict, match="sha256"):
        services.model_version_register(run_id=run.pk, model_name="m", by=scientist)
    assert not RegisteredModel.objects.exists()


def test_the_same_run_is_registered_once_per_model(register, scientist):
    version = register()
    with pytest.raises(Conflict, match="already iris-clf v1"):
        services.model_version_register(run_id=version.run_id, model_name="iris-clf", by=scientist)


def test_promotion_needs_a_second_person_and_archives_the_old_production(register, promote, scientist, approver):
    v1, v2 = register(), register()
    promote(v1)
    assert v1.stage == Stage.PRODUCTION
    request = services.promotion_request_create(version=v2, to_stage="Production", reason="better", by=scientist)
    assert request.status == "PENDING"
    assert request.compliance.compliant
    assert request.compliance.score == 100.0
    v2.refresh_from_db()
    assert v2.stage == Stage.NONE  # nothing moves before the approval
    services.promotion_request_approve(request_id=request.pk, by=approver, comment="looks good")
    v1.refresh_from_db()
    v2.refresh_from_db()
    assert (v1.stage, v2.stage) == (Stage.ARCHIVED, Stage.PRODUCTION)
    assert selectors.production_version_get(model_name="iris-clf") == v2
    changes = AuditEntry.objects.filter(action="version.stage_changed").order_by("id")
    assert [(e.object_id, e.before["stage"], e.after["stage"]) for e in changes][-2:] == [
        (str(v1.pk), "Production", "Archived"),
        (str(v2.pk), "None", "Production"),
    ]
    approved = AuditEntry.objects.filter(action="promotion.approved").order_by("id").last()
    assert approved.actor_name == "alex"
    assert approved.reason == "looks good"
    assert audit_chain_verify().intact


def test_staging_holder_steps_down_when_another_version_is_staged(register, promote):
    v1, v2 = register(), register()
    promote(v1, "staging")
    promote(v2, "staging")
    v1.refresh_from_db()
    assert (v1.stage, v2.stage) == (Stage.NONE, Stage.STAGING)


@pytest.mark.parametrize(
    ("setup", "error", "match"),
    [
        ("own", NotPermitted, "another approver must decide it"),
        ("twice", Conflict, "already approved"),
        ("rejected", Conflict, "already rejected"),
        ("no_role", NotPermitted, "needs the approve_promotion permission"),
    ],
)
def test_approval_refusals_change_nothing(register, scientist, approver, second_approver, setup, error, match):
    version = register()
    requester = approver if setup == "own" else scientist
    if setup == "own":
        requester.user_permissions.add(*_perm("request_promotion"))
        requester = type(requester).objects.get(pk=requester.pk)  # fresh permission cache
    request = services.promotion_request_create(version=version, to_stage="production", reason="r", by=requester)
    if setup == "twice":
        services.promotion_request_approve(request_id=request.pk, by=approver)
    if setup == "rejected":
        services.promotion_request_reject(request_id=request.pk, by=approver, comment="not yet")
    by = {"own": approver, "twice": second_approver, "rejected": second_approver, "no_role": scientist}[setup]
    before = (list(ModelVersion.objects.values_list("stage", flat=True)), AuditEntry.objects.count())
    with pytest.raises(error, match=match):
        services.promotion_request_approve(request_id=request.pk, by=by)
    assert (list(ModelVersion.objects.values_list("stage", flat=True)), AuditEntry.objects.count()) == before


def _perm(codename):
    from django.contrib.auth.models import Permission

    return Permission.objects.filter(codename=codename)


def test_requests_that_make_no_sense_are_refused(register, promote, scientist):
    v1, v2 = register(), register()
    promote(v1)
    promote(v2)  # archives v1
    v1.refresh_from_db()
    assert v1.stage == Stage.ARCHIVED
    with pytest.raises(Conflict, match="archived; use Roll back"):
        services.promotion_request_create(version=v1, to_stage="production", reason="r", by=scientist)
    with pytest.raises(Conflict, match="already in Production"):
        services.promotion_request_create(version=v2, to_stage="production", reason="r", by=scientist)
    with pytest.raises(InvalidInput) as bad_stage:
        services.promotion_request_create(version=v2, to_stage="prod", reason="r", by=scientist)
    assert bad_stage.value.field == "to_stage"
    with pytest.raises(InvalidInput) as no_reason:
        services.promotion_request_create(version=v2, to_stage="staging", reason="  ", by=scientist)
    assert no_reason.value.field == "reason"
    services.promotion_request_create(version=v2, to_stage="archived", reason="retire", by=scientist)
    with pytest.raises(Conflict, match="already pending"):
        services.promotion_request_create(version=v2, to_stage="archived", reason="again", by=scientist)


def test_a_version_whose_file_changed_cannot_be_promoted(register, scientist, approver, settings):
    version = register()
    request = services.promotion_request_create(version=version, to_stage="production", reason="r", by=scientist)
    (settings.ARTIFACT_ROOT / version.artifact_path).write_bytes(b"swapped")
    with pytest.raises(Conflict, match="sha256"):
        services.promotion_request_approve(request_id=request.pk, by=approver)
    version.refresh_from_db()
    request.refresh_from_db()
    assert version.stage == Stage.NONE
    assert request.status == "PENDING"


def test_non_compliant_production_needs_override_permission_and_justification(register, scientist, approver, overrider):
    policy_save(
        policy=Policy(name="accuracy floor", kind=Policy.Kind.PERFORMANCE, min_metrics={"accuracy": 1.01}),
        by=approver,
    )
    version = register()
    request = services.promotion_request_create(version=version, to_stage="production", reason="r", by=scientist)
    assert not request.compliance.compliant
    assert request.compliance.score == 0.0
    assert "accuracy" in request.compliance.results[0]["checks"][0]["detail"]
    with pytest.raises(NotPermitted, match="override_compliance"):
        services.promotion_request_approve(request_id=request.pk, by=approver, override_justification="trust me")
    with pytest.raises(Conflict) as needs_reason:
        services.promotion_request_approve(request_id=request.pk, by=overrider)
    assert needs_reason.value.field == "override_justification"
    services.promotion_request_approve(
        request_id=request.pk, by=overrider, override_justification="fraud spike: the old model is worse"
    )
    version.refresh_from_db()
    assert version.stage == Stage.PRODUCTION
    override = AuditEntry.objects.get(action="promotion.overridden")
    assert override.actor_name == "olive"
    assert override.reason == "fraud spike: the old model is worse"


def test_non_compliant_staging_needs_no_override(register, promote, approver):
    policy_save(
        policy=Policy(name="docs", kind=Policy.Kind.DOCUMENTATION, required_fields=["intended_use"]), by=approver
    )
    version = register()
    request = promote(version, "staging")
    assert not request.compliance.compliant
    assert version.stage == Stage.STAGING


def test_compliance_checks_each_policy_kind(register, approver, scientist):
    version = register(description="iris species")
    model = version.model
    services.registered_model_update(model=model, by=scientist, changes={"intended_use": "demo only"})
    for policy in [
        Policy(name="perf", kind=Policy.Kind.PERFORMANCE, min_metrics={"accuracy": 0.5}, max_latency_ms=10_000),
        Policy(name="data", kind=Policy.Kind.DATA_QUALITY, min_rows=1000, max_null_percent=0),
        Policy(name="docs", kind=Policy.Kind.DOCUMENTATION, required_fields=["description", "owner", "intended_use"]),
        Policy(name="other model only", kind=Policy.Kind.DATA_QUALITY, min_rows=10**9, enabled=False),
    ]:
        policy_save(policy=policy, by=approver)
    request = services.promotion_request_create(version=version, to_stage="staging", reason="r", by=scientist)
    results = {r["policy"]: r for r in request.compliance.results}
    assert set(results) == {"perf", "data", "docs"}
    assert results["perf"]["passed"]
    assert results["docs"]["passed"]
    assert not results["data"]["passed"]
    assert [c["check"] for c in results["data"]["checks"] if not c["passed"]] == ["rows"]
    assert request.compliance.score == pytest.approx(200 / 3)
    assert AuditEntry.objects.filter(action="policy.created").count() == 4


def test_policy_edits_are_validated_and_audited(approver):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        policy_save(policy=Policy(name="bad", kind=Policy.Kind.DOCUMENTATION, required_fields=["colour"]), by=approver)
    policy = policy_save(
        policy=Policy(name="p", kind=Policy.Kind.PERFORMANCE, min_metrics={"accuracy": 0.8}), by=approver
    )
    policy.min_metrics = {"accuracy": 0.9}
    policy_save(policy=policy, by=approver, reason="tighter")
    entry = AuditEntry.objects.get(action="policy.updated")
    assert entry.before["min_metrics"] == {"accuracy": 0.8}
    assert entry.after["min_metrics"] == {"accuracy": 0.9}


def test_reject_needs_a_comment_and_leaves_the_stage(register, scientist, approver):
    version = register()
    request = services.promotion_request_create(version=version, to_stage="production", reason="r", by=scientist)
    with pytest.raises(InvalidInput):
        services.promotion_request_reject(request_id=request.pk, by=approver, comment="")
    services.promotion_request_reject(request_id=request.pk, by=approver, comment="needs more data")
    request.refresh_from_db()
    version.refresh_from_db()
    assert request.status == "REJECTED"
    assert request.decided_by == approver
    assert version.stage == Stage.NONE


def test_rollback_through_a_second_approver(register, promote, approver, second_approver):
    v1, v2 = register(), register()
    promote(v1)
    promote(v2)
    request = services.production_rollback(model_name="iris-clf", by=approver, reason="v2 misroutes orders")
    assert request.kind == PromotionRequest.Kind.ROLLBACK
    assert request.version == v1
    v2.refresh_from_db()
    assert v2.stage == Stage.PRODUCTION  # not yet
    with pytest.raises(NotPermitted):
        services.promotion_request_approve(request_id=request.pk, by=approver)
    services.promotion_request_approve(request_id=request.pk, by=second_approver)
    v1.refresh_from_db()
    v2.refresh_from_db()
    assert (v1.stage, v2.stage) == (Stage.PRODUCTION, Stage.ARCHIVED)
    rolled = AuditEntry.objects.get(action="production.rolled_back")
    assert rolled.before == {"production_version": 2}
    assert rolled.after["production_version"] == 1
    assert rolled.after["emergency"] is False


def test_emergency_rollback_is_immediate_and_audited(register, promote, approver, scientist):
    v1, v2, v3 = register(), register(), register()
    promote(v1)
    promote(v2)
    promote(v3)
    with pytest.raises(NotPermitted, match="emergency_rollback"):
        services.production_rollback(model_name="iris-clf", by=scientist, reason="r", emergency=True)
    back = services.production_rollback(model_name="iris-clf", by=approver, reason="outage", emergency=True)
    assert back == v2
    assert selectors.production_version_get(model_name="iris-clf") == v2
    entry = AuditEntry.objects.get(action="production.rolled_back")
    assert entry.after["emergency"] is True
    assert entry.reason == "outage"
    assert entry.actor_name == "alex"
    # The version before the current one is now v3: a second rollback undoes the first.
    assert services.production_rollback(model_name="iris-clf", by=approver, reason="undo", emergency=True) == v3


def test_rollback_refusals(register, promote, approver):
    with pytest.raises(NotFound):
        services.production_rollback(model_name="nope", by=approver, reason="r", emergency=True)
    version = register()
    with pytest.raises(Conflict, match="no version in Production"):
        services.production_rollback(model_name="iris-clf", by=approver, reason="r", emergency=True)
    promote(version)
    with pytest.raises(Conflict, match="only version that was ever in Production"):
        services.production_rollback(model_name="iris-clf", by=approver, reason="r", emergency=True)


def test_the_database_refuses_a_second_production_version(register):
    from django.db import IntegrityError, transaction

    v1, v2 = register(), register()
    ModelVersion.objects.filter(pk=v1.pk).update(stage=Stage.PRODUCTION)
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.filter(pk=v2.pk).update(stage=Stage.PRODUCTION)


def test_model_edits_are_audited(register, scientist, auditor):
    model = register().model
    services.registered_model_update(
        model=model, by=scientist, changes={"description": "Iris species", "metric_thresholds": {"accuracy": 0.9}}
    )
    entry = AuditEntry.objects.get(action="model.updated")
    assert entry.before == {"description": "", "metric_thresholds": {}}
    assert entry.after == {"description": "Iris species", "metric_thresholds": {"accuracy": 0.9}}
    with pytest.raises(NotPermitted):
        services.registered_model_update(model=model, by=auditor, changes={"description": "x"})
    with pytest.raises(InvalidInput):
        services.registered_model_update(model=model, by=scientist, changes={"metric_thresholds": {"accuracy": "hi"}})


def test_role_changes_are_audited(django_user_model):
    from django.contrib.auth.models import Group

    user = django_user_model.objects.create_user("newcomer")
    approvers = Group.objects.get(name="Approver")
    user.groups.add(approvers)
    user.groups.remove(approvers)
    user.groups.add(approvers)
    user.groups.clear()
    actions = list(
        AuditEntry.objects.filter(object_type="auth.user", object_id=str(user.pk))
        .order_by("id")
        .values_list("action", "after")
    )
    assert actions == [
        ("role.granted", {"role": "Approver"}),
        ("role.revoked", {"role": "Approver"}),
        ("role.granted", {"role": "Approver"}),
        ("role.revoked", {"role": "Approver"}),
    ]


def test_roles_exist_with_their_permissions(scientist, approver, auditor, engineer):
    assert scientist.has_perm("registry.request_promotion")
    assert not scientist.has_perm("registry.approve_promotion")
    assert approver.has_perm("registry.approve_promotion")
    assert not approver.has_perm("registry.override_compliance")
    assert auditor.has_perm("governance.view_auditentry")
    assert not auditor.has_perm("registry.request_promotion")
    assert engineer.has_perm("django_celery_beat.change_periodictask")
    assert not engineer.has_perm("registry.approve_promotion")


def test_a_run_whose_features_or_classes_differ_is_refused_with_the_differences_named(register, train, scientist):
    register()  # iris-clf v1: four flower measurements, three species
    churn_run = train(dataset="customer_churn", n_samples=200)
    count = AuditEntry.objects.count()
    with pytest.raises(Unprocessable) as refused:
        services.model_version_register(run_id=churn_run.pk, model_name="iris-clf", by=scientist)
    differences = [
        "classes are no, yes; were setosa, versicolor, virginica",
        "features added: tenure_months, monthly_charges, total_charges, support_calls, num_products, age, "
        "paperless_billing, contract_type, internet_service, payment_method",
        "features removed: sepal_length_cm, sepal_width_cm, petal_length_cm, petal_width_cm",
        "target is churned, was target",
    ]
    assert refused.value.message == (
        f"run {churn_run.pk} does not fit iris-clf v1: {'; '.join(differences)}. Register it as a breaking change "
        "if this is deliberate (clients of the model must change too)."
    )
    assert refused.value.field == "run_id"
    assert refused.value.extra == {"compared_with": "iris-clf v1", "differences": differences}
    assert (ModelVersion.objects.count(), AuditEntry.objects.count()) == (1, count)


def test_a_deliberate_breaking_change_is_registered_audited_and_shown_to_the_approver(
    register, train, scientist, approver, api_client
):
    register()
    run = train(dataset="customer_churn", n_samples=200)
    version = services.model_version_register(run_id=run.pk, model_name="iris-clf", by=scientist, breaking_change=True)
    assert version.breaking_change
    assert "features added: tenure_months" in "; ".join(version.signature_changes)
    entry = AuditEntry.objects.get(action="version.registered", object_id=str(version.pk))
    assert entry.after["breaking_change"] is True
    assert entry.after["compared_with"] == "iris-clf v1"
    request = services.promotion_request_create(version=version, to_stage="staging", reason="new schema", by=scientist)
    api_client.force_authenticate(approver)
    shown = api_client.get(f"/api/v1/promotion-requests/{request.pk}").json()
    assert shown["breaking_change"] is True
    assert any("classes are no, yes" in change for change in shown["signature_changes"])
    # A version that fits its model again is compared with the latest one when nothing is in Production.
    assert (
        services.model_version_register(
            run_id=train(dataset="customer_churn", n_samples=200, seed=3).pk, model_name="iris-clf", by=scientist
        ).breaking_change
        is False
    )


def test_approval_checks_every_file_that_will_serve_and_names_the_changed_one(register, scientist, approver, settings):
    version = register()
    request = services.promotion_request_create(version=version, to_stage="production", reason="r", by=scientist)
    onnx = settings.ARTIFACT_ROOT / version.onnx_path
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in the form that answers traffic
    onnx.write_bytes(bytes(data))
    with pytest.raises(Conflict, match=rf"{version.onnx_path} has sha256"):
        services.promotion_request_approve(request_id=request.pk, by=approver)
    version.refresh_from_db()
    request.refresh_from_db()
    assert (version.stage, request.status) == (Stage.NONE, "PENDING")
    with pytest.raises(Conflict, match=version.onnx_path):
        services.promotion_request_create(version=version, to_stage="staging", reason="r", by=scientist)
