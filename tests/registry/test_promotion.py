"""The promises of the promotion service, each pinned where the registry tests only touched them: the
refusal a user reads (its words and the field the API names), the audit trail an auditor reads (who, what
before and after, why), the webhook a GitOps receiver gets, and the signal serving follows."""

import pytest

from core.errors import Conflict, InvalidInput, NotFound, NotPermitted
from governance.models import AuditEntry
from registry import services
from registry.models import ModelVersion, PromotionRequest
from registry.signals import version_stage_changed
from tests.helpers import refused, user_with_permission

pytestmark = pytest.mark.django_db

Stage = ModelVersion.Stage


@pytest.fixture
def stage_signals():
    received = []

    def receiver(sender, **kwargs):
        received.append({"sender": sender, **kwargs})

    version_stage_changed.connect(receiver)
    yield received
    version_stage_changed.disconnect(receiver)


def _entry(action):
    return AuditEntry.objects.filter(action=action).latest("id")


# --- Refusals: what the user reads, and the field the API names -------------------------------------------


def test_environment_and_mode_refusals_name_the_field_and_the_choices(register, promote, engineer):
    version = register()

    def traffic(**kwargs):
        arguments = {"version": version, "mode": "canary", "environment": "production", "reason": "r", "by": engineer}
        return lambda: services.traffic_request_create(**{**arguments, **kwargs})

    refused(InvalidInput, traffic(mode="blue-green"), "^must be canary or shadow$", "mode")
    refused(InvalidInput, traffic(environment="qa"), "^must be one of production, staging$", "environment")
    refused(InvalidInput, traffic(environment=None), "^must be one of production, staging$", "environment")
    refused(InvalidInput, traffic(reason="  "), "^is required$", "reason")
    for percent in (None, "half"):
        refused(
            InvalidInput,
            traffic(traffic_percent=percent),
            "^must be a number more than 0 and at most 100$",
            "traffic_percent",
        )
    for percent in (0, -5, 100.5, 101):
        refused(
            InvalidInput, traffic(traffic_percent=percent), "^must be more than 0 and at most 100$", "traffic_percent"
        )
    # The environment is parsed whatever its case and spaces; the bounds' edges (a sliver, all of it) are taken
    # once there is a primary to put the canary beside.
    refused(
        Conflict,
        traffic(traffic_percent=0.5, environment=" Production "),
        "has no version in Production",
        "environment",
    )
    other = register()
    promote(other)
    assert (
        services.traffic_request_create(
            version=version, mode="canary", environment=" Production ", traffic_percent=0.5, reason="r", by=engineer
        ).traffic_percent
        == 0.5
    )
    assert (
        services.traffic_request_create(
            version=version, mode="shadow", environment="production", traffic_percent=100, reason="r", by=engineer
        ).traffic_percent
        is None
    )
    assert services.environment_parse("STAGING") == "staging"


def test_traffic_refusals_say_why_and_name_the_field(register, promote, engineer):
    primary, candidate = register(), register()
    promote(primary)

    def traffic(version, environment="production"):
        return lambda: services.traffic_request_create(
            version=version, mode="canary", environment=environment, traffic_percent=10, reason="r", by=engineer
        )

    refused(Conflict, traffic(primary), r"^iris-clf v1 is already the primary in production$", "version")
    refused(
        Conflict,
        traffic(candidate, "staging"),
        r"^iris-clf has no version in Staging: nothing answers staging to put a canary beside$",
        "environment",
    )
    promote(candidate)  # v1 archived
    refused(Conflict, traffic(primary), r"^iris-clf v1 is archived: it cannot be put on traffic$", "version")


def test_a_shadow_refusal_names_the_mode_asked_for(register, engineer, approver):
    version = register()
    request = lambda: services.traffic_request_create(  # noqa: E731
        version=version, mode="shadow", environment="staging", reason="r", by=engineer
    )
    refused(Conflict, request, "to put a shadow beside$", "environment")


def test_approval_rechecks_traffic_with_the_requested_mode(register, promote, engineer, approver, scientist):
    """Approving a canary whose primary went away since the request is refused, naming the canary."""
    primary, candidate = register(), register()
    promote(primary, to_stage="staging")
    request = services.traffic_request_create(
        version=candidate, mode="canary", environment="staging", traffic_percent=5, reason="r", by=engineer
    )
    promote(primary, to_stage="production")  # staging is empty again
    refused(
        Conflict,
        lambda: services.promotion_request_approve(request_id=request.pk, by=approver),
        "nothing answers staging to put a canary beside$",
        "environment",
    )


def test_a_version_moved_since_its_request_is_refused_on_approval_with_what_to_do(
    register, promote, scientist, approver
):
    version = register()
    request = services.promotion_request_create(version=version, to_stage="production", reason="r", by=scientist)
    promote(version, to_stage="staging")
    refused(
        Conflict,
        lambda: services.promotion_request_approve(request_id=request.pk, by=approver),
        rf"^iris-clf v1 moved from None to Staging since request #{request.pk}; reject it and ask again$",
        None,
    )


def test_an_archived_version_is_brought_back_only_by_a_rollback(register, promote, scientist, approver):
    """A staging request opened before the version was archived cannot bring it back by approval."""
    v1, v2 = register(), register()
    promote(v1)
    request = services.promotion_request_create(version=v1, to_stage="staging", reason="r", by=scientist)
    v1.stage = Stage.ARCHIVED  # as if archived meanwhile, the request's from_stage kept in step
    v1.save(update_fields=["stage"])
    request.from_stage = Stage.ARCHIVED
    request.save(update_fields=["from_stage"])
    refused(
        Conflict,
        lambda: services.promotion_request_approve(request_id=request.pk, by=approver),
        "^iris-clf v1 is archived; only a rollback brings it back$",
        None,
    )
    assert v2.stage == Stage.NONE


def test_rollback_refusals_name_the_field_and_the_permission(register, promote, scientist, approver, django_user_model):
    refused(
        NotFound,
        lambda: services.production_rollback(model_name="nope", by=approver, reason="r"),
        "^model 'nope' does not exist$",
        "model",
    )
    refused(
        InvalidInput,
        lambda: services.production_rollback(model_name="iris-clf", by=approver, reason=" "),
        "^is required$",
        "reason",
    )
    nobody = django_user_model.objects.create_user("nobody", password="pw-nobody-1")
    refused(
        NotPermitted,
        lambda: services.production_rollback(model_name="iris-clf", by=nobody, reason="r", emergency=True),
        "^nobody may not roll back production without approval: it needs the .*emergency_rollback",
        None,
    )
    refused(
        NotPermitted,
        lambda: services.production_rollback(model_name="iris-clf", by=nobody, reason="r"),
        "^nobody may not request a rollback: it needs the .*request_promotion.* or .*approve_promotion",
        None,
    )
    # Not an emergency unless asked: the default opens a request for a second person.
    with pytest.raises(NotPermitted, match="request a rollback"):
        services.production_rollback_check(by=nobody)
    services.production_rollback_check(by=scientist)  # a requester may ask for one


def test_a_requester_without_approval_rights_may_ask_for_a_rollback(register, promote, django_user_model):
    v1, v2 = register(), register()
    promote(v1)
    promote(v2)
    requester = user_with_permission(django_user_model, "requester", "request_promotion")
    request = services.production_rollback(model_name="iris-clf", by=requester, reason="v2 misroutes")
    assert (request.kind, request.version, request.requested_by) == ("rollback", v1, requester)


def test_reject_refusals_name_the_permission_and_the_field(register, scientist, approver):
    version = register()
    request = services.promotion_request_create(version=version, to_stage="production", reason="r", by=scientist)
    refused(
        NotPermitted,
        lambda: services.promotion_request_reject(request_id=request.pk, by=scientist, comment="no"),
        "^dana may not reject promotions: it needs the",
        None,
    )
    refused(
        InvalidInput,
        lambda: services.promotion_request_reject(request_id=request.pk, by=approver, comment=""),
        "^is required$",
        "comment",
    )


def test_override_refusals_list_the_failures(register, scientist, approver, overrider):
    from governance.models import Policy
    from governance.services import policy_save

    policy = Policy(name="strict", kind=Policy.Kind.PERFORMANCE, min_metrics={"accuracy": 1.01, "f1_macro": 1.01})
    policy_save(policy=policy, by=approver, reason="r")
    version = register()
    request = services.promotion_request_create(version=version, to_stage="production", reason="r", by=scientist)
    refused(  # each failure named, one after another
        NotPermitted,
        lambda: services.promotion_request_approve(request_id=request.pk, by=approver),
        r"^iris-clf v1 is not compliant \(strict: accuracy \S+ \(at least 1.01\); "
        r"strict: f1_macro \S+ \(at least 1.01\)\); only a user with the "
        "override_compliance permission can put it on production traffic$",
        None,
    )
    refused(
        Conflict,
        lambda: services.promotion_request_approve(request_id=request.pk, by=overrider),
        r"^iris-clf v1 is not compliant \(.*accuracy.*\); approving it needs a written justification$",
        "override_justification",
    )


# --- The trail an auditor reads, the webhooks and the signal ----------------------------------------------


def test_a_rejection_is_audited_with_before_and_after_and_announced(register, scientist, approver, hooks):
    version = register()
    request = services.promotion_request_create(version=version, to_stage="production", reason="r", by=scientist)
    services.promotion_request_reject(request_id=request.pk, by=approver, comment="  needs more data ")
    request.refresh_from_db()
    assert request.decided_at is not None
    entry = _entry("promotion.rejected")
    assert (entry.actor_name, entry.reason, entry.object_id) == ("alex", "needs more data", str(request.pk))
    assert entry.before["status"] == "PENDING"
    assert entry.before["decided_by"] is None
    assert entry.after["status"] == "REJECTED"
    assert entry.after["decided_by"] == "alex"
    assert entry.after["requested_by"] == "dana"
    [decided] = hooks("promotion.decided")
    assert decided["decision"] == "rejected"
    assert (decided["request_id"], decided["kind"], decided["to_stage"], decided["environment"]) == (
        request.pk,
        "promotion",
        "Production",
        "",
    )
    assert (decided["model"], decided["version"]) == ("iris-clf", 1)


def test_an_approval_is_audited_announced_and_its_comment_kept(register, scientist, approver, hooks, stage_signals):
    version = register()
    request = services.promotion_request_create(version=version, to_stage="production", reason="ship it", by=scientist)
    services.promotion_request_approve(request_id=request.pk, by=approver)
    request.refresh_from_db()
    assert (request.comment, request.override_justification) == ("", "")
    assert request.decided_at is not None
    assert request.compliance.evaluated_by == approver  # evaluated again, by the approver
    entry = _entry("promotion.approved")
    assert (entry.actor_name, entry.reason) == ("alex", "")
    assert entry.before["status"] == "PENDING"
    assert entry.after["status"] == "APPROVED"
    [decided] = hooks("promotion.decided")
    assert (decided["decision"], decided["request_id"], decided["kind"]) == ("approved", request.pk, "promotion")
    assert (decided["to_stage"], decided["environment"]) == ("Production", "")
    # The stage change: audited as the approver's, with the request named; announced; signalled.
    changed = _entry("version.stage_changed")
    assert (changed.actor_name, changed.reason) == ("alex", "ship it")
    assert changed.before == {"stage": "None"}
    assert changed.after == {"stage": "Production", "promotion_request": request.pk}
    [signal] = stage_signals
    assert signal["sender"] is ModelVersion
    assert (signal["from_stage"], signal["to_stage"], signal["by"]) == ("None", "Production", approver)
    version.refresh_from_db()
    assert version.stage_changed_at == version.production_entered_at is not None


def test_a_compliant_approval_keeps_no_override_justification(register, scientist, approver):
    version = register()
    request = services.promotion_request_create(version=version, to_stage="production", reason="r", by=scientist)
    services.promotion_request_approve(request_id=request.pk, by=approver, override_justification="not needed")
    request.refresh_from_db()
    assert request.override_justification == ""
    assert not AuditEntry.objects.filter(action="promotion.overridden").exists()


def test_an_override_is_audited_with_the_failures_and_score(register, scientist, approver, overrider):
    from governance.models import Policy
    from governance.services import policy_save

    policy_save(
        policy=Policy(name="strict", kind=Policy.Kind.PERFORMANCE, min_metrics={"accuracy": 1.01}),
        by=approver,
        reason="r",
    )
    version = register()
    request = services.promotion_request_create(version=version, to_stage="production", reason="r", by=scientist)
    services.promotion_request_approve(request_id=request.pk, by=overrider, override_justification="  board ok ")
    request.refresh_from_db()
    assert request.override_justification == "board ok"
    entry = _entry("promotion.overridden")
    assert entry.reason == "board ok"
    assert entry.actor_name == "olive"
    assert entry.after["compliance_score"] == request.compliance.score
    assert any("accuracy" in failure for failure in entry.after["failures"])


def test_a_replaced_holder_is_moved_aside_by_the_approver_and_the_request_named(register, promote, approver):
    v1, v2 = register(), register()
    promote(v1)
    request = promote(v2)
    v1.refresh_from_db()
    assert v1.stage == Stage.ARCHIVED
    assert v1.stage_changed_at is not None
    archived = AuditEntry.objects.filter(action="version.stage_changed", object_id=str(v1.pk)).latest("id")
    assert (archived.actor_name, archived.reason) == ("alex", "replaced by v2")
    assert archived.after == {"stage": "Archived", "promotion_request": request.pk}
    # The promoted version itself is not moved aside by its own promotion.
    v2.refresh_from_db()
    assert v2.stage == Stage.PRODUCTION


def test_an_emergency_rollback_is_the_actors_and_announced_with_the_replaced_version(
    register, promote, approver, hooks, stage_signals
):
    v1, v2 = register(), register()
    promote(v1)
    promote(v2)
    stage_signals.clear()
    services.production_rollback(model_name="iris-clf", by=approver, reason="outage", emergency=True)
    changed = AuditEntry.objects.filter(action="version.stage_changed", object_id=str(v1.pk)).latest("id")
    assert changed.actor_name == "alex"
    assert changed.after == {"stage": "Production", "promotion_request": None}
    rolled = _entry("production.rolled_back")
    assert rolled.after == {"production_version": 1, "emergency": True, "promotion_request": None}
    [event] = hooks("production.rolled_back")
    assert (event["replaced_version"], event["emergency"], event["version"]) == (2, True, 1)
    assert {signal["by"] for signal in stage_signals} == {approver}


def test_an_approved_rollback_names_its_request(register, promote, approver, second_approver, hooks):
    v1, v2 = register(), register()
    promote(v1)
    promote(v2)
    request = services.production_rollback(model_name="iris-clf", by=approver, reason="v2 misroutes")
    services.promotion_request_approve(request_id=request.pk, by=second_approver)
    rolled = _entry("production.rolled_back")
    assert rolled.actor_name == "blair"
    assert rolled.after == {"production_version": 1, "emergency": False, "promotion_request": request.pk}
    assert rolled.before == {"production_version": 2}
    [event] = hooks("production.rolled_back")
    assert (event["replaced_version"], event["emergency"]) == (2, False)


def test_a_rollback_goes_to_the_version_before_the_current_one(register, promote, approver):
    """With v1, v2, v3 promoted in turn and v2 brought back, the next rollback target is v3 (the one before
    the current), not v2 itself."""
    v1, v2, v3 = register(), register(), register()
    for version in (v1, v2, v3):
        promote(version)
    model = v1.model
    assert services.rollback_target(model) == v2
    services.production_rollback(model_name="iris-clf", by=approver, reason="r", emergency=True)
    assert services.rollback_target(model) == v3


# --- What the policies are checked against: the facts gathered about the version --------------------------


def _upload_with_nulls(scientist):
    """A 40-row dataset whose `width` column is missing in 4 rows (10 %) and `length` in 1 (2.5 %)."""
    from experiments import services as experiment_services

    lines = ["length,width,kind"]
    for i in range(40):
        length = "" if i == 0 else f"{1 + i % 7 + (3 if i % 2 else 0)}.5"
        width = "" if i % 10 == 3 else f"{0.2 + i % 5}"
        lines.append(f"{length},{width},{'a' if i % 2 else 'b'}")
    version, _ = experiment_services.dataset_version_upload(
        name="gappy", content="\n".join(lines).encode(), target="kind", by=scientist
    )
    return version


def test_the_policies_see_the_versions_dataset_nulls_model_and_requester(scientist, approver, train, register):
    from governance.models import Policy
    from governance.services import policy_save

    dataset = _upload_with_nulls(scientist)
    version = register(name="gappy-clf", run=train(dataset="gappy"))
    other = register(name="iris-clf")
    policy_save(policy=Policy(name="nulls", kind=Policy.Kind.DATA_QUALITY, max_null_percent=9), by=approver)
    policy_save(  # only for the other model: not applied here
        policy=Policy(name="iris only", kind=Policy.Kind.DATA_QUALITY, min_rows=10**6, model=other.model), by=approver
    )
    policy_save(
        policy=Policy(name="validated", kind=Policy.Kind.DATA_QUALITY, require_validated_dataset=True), by=approver
    )

    request = services.promotion_request_create(version=version, to_stage="staging", reason="r", by=scientist)

    evaluation = request.compliance
    assert evaluation.evaluated_by == scientist
    results = {r["policy"]: r for r in evaluation.results}
    assert set(results) == {"nulls", "validated"}
    nulls = {check["check"]: check for check in results["nulls"]["checks"]}["nulls"]
    assert nulls == {"check": "nulls", "passed": False, "detail": "most nulls in 'width': 10.0% (at most 9%)"}
    [validated] = results["validated"]["checks"]
    assert validated == {"check": "validated", "passed": True, "detail": f"{dataset} matches its checksum and schema"}
    assert services.promotion_request_create(
        version=other, to_stage="staging", reason="r", by=scientist
    ).compliance.score == pytest.approx(200 / 3)  # its own policy fails; iris has no nulls, and is validated


def test_a_dataset_file_that_changed_fails_the_validation_check_with_the_problem(
    register, scientist, approver, settings
):
    from pathlib import Path

    from governance.models import Policy
    from governance.services import policy_save

    version = register()
    policy_save(
        policy=Policy(name="validated", kind=Policy.Kind.DATA_QUALITY, require_validated_dataset=True), by=approver
    )
    dataset = version.dataset
    path = Path(settings.ARTIFACT_ROOT) / dataset.path
    path.write_bytes(path.read_bytes() + b"5.0,3.0,1.5,0.2,setosa\n")

    request = services.promotion_request_create(version=version, to_stage="staging", reason="r", by=scientist)

    [check] = request.compliance.results[0]["checks"]
    assert check["passed"] is False
    assert check["detail"].startswith(f"{dataset}: ")
    assert "checksum" in check["detail"] or "sha256" in check["detail"]


# --- Requests: their fields, duplicates, and the audit snapshot ------------------------------------------


def test_a_request_snapshot_in_the_trail_holds_every_fact_of_the_request(register, promote, engineer):
    primary, candidate = register(), register()
    promote(primary)
    request = services.traffic_request_create(
        version=candidate, mode="canary", environment="production", traffic_percent=20, reason="try", by=engineer
    )
    assert (request.to_stage, request.environment) == ("", "production")
    entry = AuditEntry.objects.get(action="traffic.requested")
    assert entry.after == {
        "kind": "canary",
        "to_stage": "",
        "from_stage": "None",
        "environment": "production",
        "traffic_percent": 20.0,
        "status": "PENDING",
        "requested_by": "eli",
        "decided_by": None,
        "compliance_score": request.compliance.score,
        "compliant": request.compliance.compliant,
        "breaking_change": False,
        "version": "iris-clf v2",
    }
    assert (entry.actor_name, entry.reason) == ("eli", "try")


def test_a_duplicate_request_names_the_pending_one_of_that_version(register, scientist):
    v1, v2 = register(), register()
    services.promotion_request_create(version=v1, to_stage="staging", reason="r", by=scientist)
    first = services.promotion_request_create(version=v2, to_stage="staging", reason="r", by=scientist)
    assert first.environment == ""
    refused(
        Conflict,
        lambda: services.promotion_request_create(version=v2, to_stage="staging", reason="again", by=scientist),
        rf"^request #{first.pk} for iris-clf v2 \(.*Staging.*\) is already pending$",
        "to_stage",
    )


def test_an_unknown_request_is_not_found_by_its_number(approver):
    for unknown in (999999, "abc", None):
        refused(
            NotFound,
            lambda unknown=unknown: services.promotion_request_approve(request_id=unknown, by=approver),
            f"^promotion request {unknown} does not exist$",
            None,
        )


def test_who_may_decide_is_said_in_words(register, scientist, django_user_model):
    version = register()
    request = services.promotion_request_create(version=version, to_stage="staging", reason="r", by=scientist)
    nobody = django_user_model.objects.create_user("nobody", password="pw-nobody-1")
    refused(
        NotPermitted,
        lambda: services.promotion_decision_check(request=request, by=nobody),
        "^nobody may not decide promotion requests: it needs the",
        None,
    )
    refused(
        InvalidInput,
        lambda: services.promotion_request_create(version=version, to_stage="qa", reason="r", by=scientist),
        "^must be one of archived, production, staging$",
        "to_stage",
    )


def test_an_approved_canary_is_signalled_to_serving_with_the_approver(register, promote, engineer, approver):
    from registry.signals import traffic_approved

    received = []

    def receiver(sender, **kwargs):
        received.append((sender, kwargs["request"].pk, kwargs["version"], kwargs["by"]))

    primary, candidate = register(), register()
    promote(primary)
    request = services.traffic_request_create(
        version=candidate, mode="shadow", environment="production", reason="r", by=engineer
    )
    traffic_approved.connect(receiver)
    try:
        services.promotion_request_approve(request_id=request.pk, by=approver)
    finally:
        traffic_approved.disconnect(receiver)
    assert received == [(PromotionRequest, request.pk, candidate, approver)]


def test_a_duplicate_names_the_pending_request_of_that_version_stage_kind_and_environment(
    register, promote, scientist, engineer
):
    """Duplicates are looked up among pending requests newest first: the one named is the one that blocks."""
    v1, v2, v3 = register(), register(), register()
    promote(v1)
    staging = services.promotion_request_create(version=v2, to_stage="staging", reason="r", by=scientist)
    services.promotion_request_create(version=v2, to_stage="production", reason="r", by=scientist)
    services.promotion_request_create(version=v3, to_stage="staging", reason="r", by=scientist)
    refused(
        Conflict,
        lambda: services.promotion_request_create(version=v2, to_stage="staging", reason="r", by=scientist),
        rf"^request #{staging.pk} for iris-clf v2 \(.*Staging.*\) is already pending$",
        "to_stage",
    )

    def traffic(version, mode, environment="production"):
        return services.traffic_request_create(
            version=version, mode=mode, environment=environment, traffic_percent=10, reason="r", by=engineer
        )

    canary = traffic(v2, "canary")
    traffic(v2, "shadow")
    traffic(v3, "canary")
    refused(
        Conflict,
        lambda: traffic(v2, "canary"),
        rf"^request #{canary.pk} for iris-clf v2 \(.*canary.*\) is already pending$",
        "environment",
    )


def test_a_rollback_approved_after_production_emptied_names_no_replaced_version(
    register, promote, approver, second_approver, hooks
):
    v1, v2 = register(), register()
    promote(v1)
    promote(v2)
    request = services.production_rollback(model_name="iris-clf", by=approver, reason="v2 misroutes")
    promote(v2, to_stage="staging")  # production is empty meanwhile
    services.promotion_request_approve(request_id=request.pk, by=second_approver)
    rolled = _entry("production.rolled_back")
    assert rolled.before == {"production_version": None}
    [event] = hooks("production.rolled_back")
    assert event["replaced_version"] is None


def test_each_request_and_decision_says_which_permission_it_lacks(register, scientist, django_user_model):
    version = register()
    request = services.promotion_request_create(version=version, to_stage="staging", reason="r", by=scientist)
    nobody = django_user_model.objects.create_user("nobody", password="pw-nobody-1")
    for call, doing in [
        (
            lambda: services.promotion_request_create(version=version, to_stage="production", reason="r", by=nobody),
            "request promotions",
        ),
        (
            lambda: services.traffic_request_create(
                version=version, mode="shadow", environment="production", reason="r", by=nobody
            ),
            "request canary or shadow deployments",
        ),
        (lambda: services.promotion_request_approve(request_id=request.pk, by=nobody), "approve promotions"),
        (
            lambda: services.promotion_request_reject(request_id=request.pk, by=nobody, comment="no"),
            "reject promotions",
        ),
    ]:
        refused(NotPermitted, call, f"^nobody may not {doing}: it needs the", None)


def test_a_request_is_announced_with_what_it_asks(register, promote, engineer, scientist, hooks):
    primary, candidate = register(), register()
    promote(primary)
    canary = services.traffic_request_create(
        version=candidate, mode="canary", environment="production", traffic_percent=15, reason="r", by=engineer
    )
    staging = services.promotion_request_create(version=candidate, to_stage="staging", reason="r", by=scientist)
    requested = hooks("promotion.requested")
    announced = [
        {key: event[key] for key in ("request_id", "kind", "to_stage", "environment", "traffic_percent", "version")}
        for event in requested[-2:]
    ]
    assert announced == [
        {
            "request_id": canary.pk,
            "kind": "canary",
            "to_stage": "",
            "environment": "production",
            "traffic_percent": 15.0,
            "version": 2,
        },
        {
            "request_id": staging.pk,
            "kind": "promotion",
            "to_stage": "Staging",
            "environment": "",
            "traffic_percent": None,
            "version": 2,
        },
    ]


def test_promotion_request_refusals_name_the_field(register, promote, scientist):
    v1, v2 = register(), register()
    promote(v1)
    refused(
        Conflict,
        lambda: services.promotion_request_create(version=v1, to_stage="production", reason="r", by=scientist),
        "^iris-clf v1 is already in Production$",
        "to_stage",
    )
    promote(v2)
    refused(
        Conflict,
        lambda: services.promotion_request_create(version=v1, to_stage="staging", reason="r", by=scientist),
        "^iris-clf v1 is archived; use Roll back production to bring back an earlier production version$",
        "version",
    )


def test_a_duplicate_traffic_request_names_the_one_of_its_environment(register, promote, engineer):
    v1, v2, v3 = register(), register(), register()
    promote(v1)
    promote(v2, to_stage="staging")

    def canary(environment):
        return services.traffic_request_create(
            version=v3, mode="canary", environment=environment, traffic_percent=10, reason="r", by=engineer
        )

    production = canary("production")
    canary("staging")  # newer, of the same version and kind
    refused(
        Conflict,
        lambda: canary("production"),
        rf"^request #{production.pk} for iris-clf v3 \(.*\) is already pending$",
        "environment",
    )
