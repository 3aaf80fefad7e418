"""Policies and the compliance evaluation of a model version against them.

Governance is the lowest app: it reads no registry or experiments code. The registry hands it the
facts a policy looks at as a ComplianceSubject, and gets back a stored evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.db import transaction
from django.db.models import Q
from django.forms.models import model_to_dict

from core.metrics import metric_threshold_check
from core.permissions import permission_require
from governance.models import AuditAction, ComplianceEvaluation, Policy
from governance.services.audit import audit_record

if TYPE_CHECKING:
    from django.db.models import QuerySet

    from core.permissions import Actor


@dataclass(frozen=True)
class ComplianceSubject:
    """What the policies look at for one model version, gathered by the registry."""

    version_id: int
    model_id: int
    metrics: dict
    dataset: str
    dataset_rows: int
    # Whether the training data still matches its checksum and schema, and if not, why.
    dataset_valid: bool
    dataset_problem: str = ""
    null_percent: dict = field(default_factory=dict)  # column -> % of nulls
    documented: dict = field(default_factory=dict)  # "description" / "owner" / "intended_use" -> filled in


def _check(name, passed, detail):
    return {"check": name, "passed": bool(passed), "detail": detail}


def _performance_checks(policy, subject):
    checks = [
        _check(metric, *metric_threshold_check(metric, subject.metrics.get(metric), threshold))
        for metric, threshold in sorted(policy.min_metrics.items())
    ]
    if policy.max_latency_ms is not None:
        latency = subject.metrics.get("inference_time_ms")
        if latency is None:
            checks.append(_check("latency", False, "the version has no inference_time_ms metric"))
        else:
            checks.append(
                _check(
                    "latency",
                    latency <= policy.max_latency_ms,
                    f"single-row inference {latency:.3g} ms (at most {policy.max_latency_ms:g} ms)",
                )
            )
    return checks


def _data_quality_checks(policy, subject):
    checks = []
    if policy.require_validated_dataset:
        if subject.dataset_valid:
            checks.append(_check("validated", True, f"{subject.dataset} matches its checksum and schema"))
        else:
            checks.append(_check("validated", False, f"{subject.dataset}: {subject.dataset_problem}"))
    if policy.min_rows is not None:
        rows = subject.dataset_rows
        checks.append(_check("rows", rows >= policy.min_rows, f"{rows} rows (at least {policy.min_rows})"))
    if policy.max_null_percent is not None:
        worst_name, worst = "", 0.0
        for name, percent in subject.null_percent.items():
            if percent > worst or not worst_name:
                worst_name, worst = name, percent
        checks.append(
            _check(
                "nulls",
                worst <= policy.max_null_percent,
                f"most nulls in {worst_name!r}: {worst:.1f}% (at most {policy.max_null_percent:g}%)",
            )
        )
    return checks


def _documentation_checks(policy, subject):
    present = subject.documented
    return [
        _check(name, present.get(name), f"{name.replace('_', ' ')} {'filled in' if present.get(name) else 'missing'}")
        for name in policy.required_fields
    ]


_CHECKS = {
    Policy.Kind.PERFORMANCE: _performance_checks,
    Policy.Kind.DATA_QUALITY: _data_quality_checks,
    Policy.Kind.DOCUMENTATION: _documentation_checks,
}


def policies_for(*, model_id: int) -> QuerySet[Policy]:
    """The enabled policies that apply to a registered model: its own and the global ones."""
    return Policy.objects.filter(Q(model__isnull=True) | Q(model_id=model_id), enabled=True).order_by("kind", "name")


def compliance_evaluate(*, subject: ComplianceSubject, by: Actor = None) -> ComplianceEvaluation:
    """Check a version against every enabled policy that applies to its model; stores and returns the result.

    A policy passes when all its checks pass; the score is the share of policies passed.
    With no policy, a version is compliant with a score of 100.
    """
    results = []
    for policy in policies_for(model_id=subject.model_id):
        checks = _CHECKS[policy.kind](policy, subject)
        results.append(
            {
                "policy": policy.name,
                "policy_id": policy.pk,
                "kind": policy.kind,
                "passed": all(check["passed"] for check in checks),
                "checks": checks,
            }
        )
    passed = sum(result["passed"] for result in results)
    score = 100.0 * passed / len(results) if results else 100.0
    return ComplianceEvaluation.objects.create(
        version_id=subject.version_id,
        results=results,
        score=score,
        compliant=passed == len(results),
        evaluated_by=by if by is not None and by.is_authenticated else None,
    )


def compliance_failures(evaluation: ComplianceEvaluation) -> list[str]:
    """ "policy: check detail" for each failed check, for messages."""
    return [
        f"{result['policy']}: {check['detail']}"
        for result in evaluation.results
        if not result["passed"]
        for check in result["checks"]
        if not check["passed"]
    ]


def _policy_snapshot(policy):
    return model_to_dict(policy, exclude=["id"])


def policy_save(*, policy: Policy, by: Actor, reason: str = "") -> Policy:
    """Create or edit a policy (validated), audited as policy.created / policy.updated."""
    creating = policy.pk is None
    permission_require(
        by,
        "governance.add_policy" if creating else "governance.change_policy",
        doing="create policies" if creating else "edit policies",
    )
    policy.full_clean()
    with transaction.atomic():
        before = None
        if policy.pk is not None:
            before = _policy_snapshot(Policy.objects.select_for_update().get(pk=policy.pk))
        policy.save()
        audit_record(
            actor=by,
            action=AuditAction.POLICY_UPDATED if before is not None else AuditAction.POLICY_CREATED,
            obj=policy,
            before=before,
            after=_policy_snapshot(policy),
            reason=reason,
        )
    return policy
