"""The compliance evaluation, check by check, on the facts the registry hands governance (a ComplianceSubject):
what each policy kind checks and says, which policies apply to a model, the score, and the audited save of
a policy by the roles that may."""

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ValidationError

from core.errors import NotPermitted
from governance.models import AuditEntry, Policy
from governance.services import ComplianceSubject, compliance_evaluate, compliance_failures, policy_save
from governance.services.compliance import policies_for
from tests.helpers import user_with_permission

pytestmark = pytest.mark.django_db
Kind = Policy.Kind


@pytest.fixture
def model(register):
    return register().model


@pytest.fixture
def other_model(register):
    return register(name="other-model").model


def _subject(model, **facts):
    return ComplianceSubject(
        version_id=facts.pop("version_id", model.versions.first().pk),
        model_id=model.pk,
        metrics=facts.pop("metrics", {}),
        dataset=facts.pop("dataset", "iris@0123456789ab"),
        dataset_rows=facts.pop("dataset_rows", 150),
        dataset_valid=facts.pop("dataset_valid", True),
        **facts,
    )


def _policy(approver, **fields):
    fields.setdefault("name", f"policy-{Policy.objects.count()}")
    return policy_save(policy=Policy(**fields), by=approver)


def _checks(evaluation, policy_name):
    (result,) = [r for r in evaluation.results if r["policy"] == policy_name]
    return result


def test_performance_checks_minimums_losses_and_latency(model, approver):
    _policy(
        approver, name="perf", kind=Kind.PERFORMANCE, min_metrics={"accuracy": 0.9, "log_loss": 0.5}, max_latency_ms=2
    )
    met = compliance_evaluate(
        subject=_subject(model, metrics={"accuracy": 0.9, "log_loss": 0.5, "inference_time_ms": 2})
    )
    result = _checks(met, "perf")
    assert result["passed"] is True
    assert [(c["check"], c["passed"], c["detail"]) for c in result["checks"]] == [
        ("accuracy", True, "accuracy 0.9 (at least 0.9)"),
        ("log_loss", True, "log_loss 0.5 (at most 0.5)"),
        ("latency", True, "single-row inference 2 ms (at most 2 ms)"),
    ]
    slow = compliance_evaluate(
        subject=_subject(model, metrics={"accuracy": 0.95, "log_loss": 0.1, "inference_time_ms": 2.01})
    )
    assert [c["passed"] for c in _checks(slow, "perf")["checks"]] == [True, True, False]
    missing = compliance_evaluate(subject=_subject(model, metrics={"accuracy": 0.89}))
    assert [(c["check"], c["passed"], c["detail"]) for c in _checks(missing, "perf")["checks"]] == [
        ("accuracy", False, "accuracy 0.89 (at least 0.9)"),
        ("log_loss", False, "no log_loss metric"),
        ("latency", False, "the version has no inference_time_ms metric"),
    ]
    assert (missing.compliant, missing.score) == (False, 0.0)


def test_data_quality_checks_validation_rows_and_the_column_with_most_nulls(model, approver):
    _policy(approver, name="data", kind=Kind.DATA_QUALITY, min_rows=100, max_null_percent=5)
    good = compliance_evaluate(subject=_subject(model, dataset_rows=100, null_percent={"a": 0.0, "b": 5.0, "c": 1.0}))
    assert [(c["check"], c["passed"], c["detail"]) for c in _checks(good, "data")["checks"]] == [
        ("validated", True, "iris@0123456789ab matches its checksum and schema"),
        ("rows", True, "100 rows (at least 100)"),
        ("nulls", True, "most nulls in 'b': 5.0% (at most 5%)"),
    ]
    bad = compliance_evaluate(
        subject=_subject(
            model, dataset_rows=99, dataset_valid=False, dataset_problem="sha256 changed", null_percent={"a": 5.1}
        )
    )
    assert [(c["check"], c["passed"], c["detail"]) for c in _checks(bad, "data")["checks"]] == [
        ("validated", False, "iris@0123456789ab: sha256 changed"),
        ("rows", False, "99 rows (at least 100)"),
        ("nulls", False, "most nulls in 'a': 5.1% (at most 5%)"),
    ]
    no_nulls = compliance_evaluate(subject=_subject(model, null_percent={"x": 0.0, "y": 0.0}))
    assert _checks(no_nulls, "data")["checks"][2]["detail"] == "most nulls in 'x': 0.0% (at most 5%)"
    no_columns = compliance_evaluate(subject=_subject(model, null_percent={}))
    assert _checks(no_columns, "data")["checks"][2]["detail"] == "most nulls in '': 0.0% (at most 5%)"


def test_a_data_quality_policy_checks_only_the_rules_it_sets(model, approver):
    _policy(approver, name="rows-only", kind=Kind.DATA_QUALITY, require_validated_dataset=False, min_rows=10)
    evaluation = compliance_evaluate(subject=_subject(model, dataset_valid=False))
    assert [c["check"] for c in _checks(evaluation, "rows-only")["checks"]] == ["rows"]
    assert evaluation.compliant


def test_documentation_checks_each_required_field(model, approver):
    _policy(approver, name="docs", kind=Kind.DOCUMENTATION, required_fields=["owner", "intended_use"])
    evaluation = compliance_evaluate(subject=_subject(model, documented={"owner": "team-a", "intended_use": ""}))
    assert [(c["check"], c["passed"], c["detail"]) for c in _checks(evaluation, "docs")["checks"]] == [
        ("owner", True, "owner filled in"),
        ("intended_use", False, "intended use missing"),
    ]
    assert compliance_failures(evaluation) == ["docs: intended use missing"]


def test_the_policies_that_apply_are_the_global_and_the_models_own_enabled_ones(
    model, other_model, approver, scientist
):
    _policy(approver, name="b-global", kind=Kind.DOCUMENTATION, required_fields=["owner"])
    _policy(approver, name="a-own", kind=Kind.DOCUMENTATION, required_fields=["owner"], model=model)
    _policy(approver, name="c-other", kind=Kind.DOCUMENTATION, required_fields=["owner"], model=other_model)
    _policy(approver, name="d-off", kind=Kind.DOCUMENTATION, required_fields=["owner"], enabled=False)
    _policy(approver, name="0-perf", kind=Kind.PERFORMANCE, min_metrics={"accuracy": 0.5})
    # By kind, then name: documentation before performance whatever the names.
    assert [p.name for p in policies_for(model_id=model.pk)] == ["a-own", "b-global", "0-perf"]

    evaluation = compliance_evaluate(subject=_subject(model, metrics={"accuracy": 0.9}), by=scientist)
    assert [r["policy"] for r in evaluation.results] == ["a-own", "b-global", "0-perf"]
    assert [r["kind"] for r in evaluation.results] == ["documentation", "documentation", "performance"]
    assert evaluation.results[0]["policy_id"] == Policy.objects.get(name="a-own").pk
    assert (evaluation.compliant, round(evaluation.score, 2)) == (False, 33.33)  # one of three passed
    assert evaluation.evaluated_by == scientist
    assert compliance_failures(evaluation) == ["a-own: owner missing", "b-global: owner missing"]


def test_with_no_policy_a_version_is_compliant_and_who_evaluated_is_kept_only_if_signed_in(model):
    evaluation = compliance_evaluate(subject=_subject(model), by=AnonymousUser())
    assert (evaluation.results, evaluation.score, evaluation.compliant) == ([], 100.0, True)
    assert evaluation.evaluated_by is None
    assert evaluation.version_id == model.versions.first().pk
    assert compliance_failures(evaluation) == []


def test_policies_are_saved_validated_audited_and_only_by_who_may(approver, scientist):
    policy = _policy(approver, name="acc", kind=Kind.PERFORMANCE, min_metrics={"accuracy": 0.9})
    created = AuditEntry.objects.get(action="policy.created")
    assert (created.actor_name, created.before, created.reason) == ("alex", None, "")
    assert "id" not in created.after  # the object's id is the entry's object_id already
    assert created.after["min_metrics"] == {"accuracy": 0.9}
    assert created.after["name"] == "acc"

    policy.min_metrics = {"accuracy": 0.95}
    policy_save(policy=policy, by=approver, reason="the bar rises")
    updated = AuditEntry.objects.get(action="policy.updated")
    assert (updated.before["min_metrics"], updated.after["min_metrics"]) == ({"accuracy": 0.9}, {"accuracy": 0.95})
    assert updated.reason == "the bar rises"

    with pytest.raises(ValidationError) as refused:
        _policy(approver, name="empty", kind=Kind.PERFORMANCE)
    assert "kind" in refused.value.message_dict
    with pytest.raises(NotPermitted, match="dana may not create policies"):
        _policy(scientist, name="mine", kind=Kind.DOCUMENTATION, required_fields=["owner"])
    policy.min_metrics = {"accuracy": 0.1}
    with pytest.raises(NotPermitted, match="dana may not edit policies"):
        policy_save(policy=policy, by=scientist)
    assert Policy.objects.get(pk=policy.pk).min_metrics == {"accuracy": 0.95}
    assert AuditEntry.objects.filter(action__startswith="policy.").count() == 2


def test_creating_and_editing_a_policy_need_their_own_permissions(django_user_model):
    adder = user_with_permission(django_user_model, "adder", "add_policy")
    changer = user_with_permission(django_user_model, "changer", "change_policy")
    with pytest.raises(NotPermitted, match="changer may not create policies"):
        _policy(changer, name="x", kind=Kind.DOCUMENTATION, required_fields=["owner"])
    policy = _policy(adder, name="docs", kind=Kind.DOCUMENTATION, required_fields=["owner"])
    policy.required_fields = ["owner", "description"]
    with pytest.raises(NotPermitted, match="adder may not edit policies"):
        policy_save(policy=policy, by=adder)
    policy_save(policy=policy, by=changer)
    assert Policy.objects.get(pk=policy.pk).required_fields == ["owner", "description"]
