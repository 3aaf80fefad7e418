"""Policies and the compliance evaluation of a model version against them."""

from django.db import transaction
from django.db.models import Q
from django.forms.models import model_to_dict

from governance.models import ComplianceEvaluation, Policy
from governance.services.audit import audit_record
from mlops_site.errors import ApplicationError


def _check(name, passed, detail):
    return {"check": name, "passed": bool(passed), "detail": detail}


def metric_threshold_check(metric, value, threshold):
    """(passed, detail) for a metric against a threshold: a minimum, or a maximum for losses, times and sizes."""
    from experiments.services.runs import lower_is_better

    if value is None:
        return False, f"no {metric} metric"
    if lower_is_better(metric):
        return value <= threshold, f"{metric} {value:.4g} (at most {threshold:g})"
    return value >= threshold, f"{metric} {value:.4g} (at least {threshold:g})"


def _performance_checks(policy, version):
    checks = [
        _check(metric, *metric_threshold_check(metric, version.metrics.get(metric), threshold))
        for metric, threshold in sorted(policy.min_metrics.items())
    ]
    if policy.max_latency_ms is not None:
        latency = version.metrics.get("inference_time_ms")
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


def _data_quality_checks(policy, version):
    from experiments.services import dataset_frame_load

    dataset = version.dataset
    checks = []
    if policy.require_validated_dataset:
        try:
            dataset_frame_load(version=dataset)
        except ApplicationError as exc:
            checks.append(_check("validated", False, f"{dataset}: {exc.message}"))
        else:
            checks.append(_check("validated", True, f"{dataset} matches its checksum and schema"))
    if policy.min_rows is not None:
        checks.append(
            _check("rows", dataset.n_rows >= policy.min_rows, f"{dataset.n_rows} rows (at least {policy.min_rows})")
        )
    if policy.max_null_percent is not None:
        worst_name, worst = "", 0.0
        for column in dataset.schema["columns"]:
            percent = 100.0 * column["null_count"] / max(dataset.n_rows, 1)
            if percent > worst or not worst_name:
                worst_name, worst = column["name"], percent
        checks.append(
            _check(
                "nulls",
                worst <= policy.max_null_percent,
                f"most nulls in {worst_name!r}: {worst:.1f}% (at most {policy.max_null_percent:g}%)",
            )
        )
    return checks


def _documentation_checks(policy, version):
    model = version.model
    present = {
        "description": bool(model.description.strip() or version.description.strip()),
        "owner": model.owner_id is not None,
        "intended_use": bool(model.intended_use.strip()),
    }
    return [
        _check(field, present[field], f"{field.replace('_', ' ')} {'filled in' if present[field] else 'missing'}")
        for field in policy.required_fields
    ]


_CHECKS = {
    Policy.Kind.PERFORMANCE: _performance_checks,
    Policy.Kind.DATA_QUALITY: _data_quality_checks,
    Policy.Kind.DOCUMENTATION: _documentation_checks,
}


def policies_for(model):
    return Policy.objects.filter(Q(model__isnull=True) | Q(model=model), enabled=True).order_by("kind", "name")


def compliance_evaluate(*, version, by=None):
    """Check a version against every enabled policy that applies to its model; stores and returns the result.

    A policy passes when all its checks pass; the score is the share of policies passed.
    With no policy, a version is compliant with a score of 100.
    """
    results = []
    for policy in policies_for(version.model):
        checks = _CHECKS[policy.kind](policy, version)
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
        version=version,
        results=results,
        score=score,
        compliant=passed == len(results),
        evaluated_by=by if by is not None and by.is_authenticated else None,
    )


def compliance_failures(evaluation):
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


def policy_save(*, policy, by, reason=""):
    """Create or edit a policy (validated), audited as policy.created / policy.updated."""
    policy.full_clean()
    with transaction.atomic():
        before = None
        if policy.pk is not None:
            before = _policy_snapshot(Policy.objects.select_for_update().get(pk=policy.pk))
        policy.save()
        audit_record(
            actor=by,
            action="policy.updated" if before is not None else "policy.created",
            obj=policy,
            before=before,
            after=_policy_snapshot(policy),
            reason=reason,
        )
    return policy
