"""Who may do what: every state-changing operation, on every surface that offers it, for every role.

The table below is the README's role table. Each (operation, surface) test builds its world once and
tries the operation as each role inside a savepoint that is rolled back, so every role meets the same
world. "Allowed" is judged by the effect (the row that appears, the status that moves), and a refusal
must come with its reason (403 naming what is missing, the admin's message, a CLI error), never a 500.
"""

import json
import re
from io import StringIO
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.db import transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from rest_framework.test import APIClient

from experiments.models import DatasetVersion, Run
from governance.models import Policy, WebhookSubscription
from monitoring.models import AlertRule, DriftRun, RetrainingPolicy
from registry import services as registry_services
from registry.models import ModelVersion, PromotionRequest, RegisteredModel
from serving.crm.models import CrmRefresh, CrmSettings, SegmentChange
from serving.models import Deployment, PredictionLog
from tests.conftest import _member
from tests.serving.conftest import IRIS_ROW

pytestmark = pytest.mark.django_db

ROLES = ("scientist", "approver", "auditor", "engineer", "application", "nobody", "superuser")

# operation -> the roles that may do it (the README's role table; the superuser may do everything).
ALLOWED = {
    "launch a run or sweep": {"scientist"},
    "upload a dataset": {"scientist"},
    "stop someone else's run": {"engineer"},
    "register a version, also as a breaking change": {"scientist"},
    "edit a model's documentation and gate": {"scientist"},
    "request a promotion": {"scientist"},
    "approve someone else's request": {"approver"},
    "reject someone else's request": {"approver"},
    "request a rollback": {"scientist", "approver"},
    "roll back at once, in an emergency": {"approver"},
    "request a canary or shadow": {"scientist", "engineer"},
    "retire a canary or shadow": {"engineer"},
    "send feedback, correct it": {"engineer", "application"},
    "predict with a version that is not in Staging or Production": {"engineer"},
    "predict with the deployed version": set(ROLES),
    "edit policies": {"approver"},
    "edit webhooks, redeliver": {"engineer"},
    "read the audit log": {"auditor"},
    "read runs, datasets, the registry, deployments": {"scientist", "approver", "auditor", "engineer"},
    "stop a run they launched": {"scientist", "engineer"},  # an ML engineer may stop any run
    "edit periodic tasks": {"engineer"},
    "compute a model's drift now": {"engineer"},
    "update a customer's segment from a prediction": {"engineer", "application"},
    "refresh every customer's segment, stop, resume": {"engineer"},
    "edit the CRM settings: model and mapping": {"engineer"},
    "acknowledge or silence an alert": {"engineer"},
    "edit alert rules and retraining policies": {"engineer"},
}
# The Application account is not staff: it uses the API only, never the admin.
API_ONLY = {"application"}


class Refused(Exception):
    """The surface refused with a reason."""


@pytest.fixture
def people(django_user_model, scientist, approver, auditor, engineer, application):
    """One user per role, plus 'lee', the data scientist whose runs and requests the others act on."""
    return {
        "scientist": scientist,
        "approver": approver,
        "auditor": auditor,
        "engineer": engineer,
        "application": application,
        "nobody": _member(django_user_model, "nora"),
        "superuser": django_user_model.objects.create_superuser("root", password="pw-root-1"),
        "lee": _member(django_user_model, "lee", "Data scientist"),
    }


# --- the surfaces -----------------------------------------------------------------------------------


def _api(user, method, url, data=None, fmt="json"):
    client = APIClient()
    client.force_authenticate(user)
    response = getattr(client, method)(url, data, format=fmt) if data is not None else getattr(client, method)(url)
    if response.status_code == 403:
        assert "may not" in response.json()["error"] or "another approver must decide" in response.json()["error"], (
            response.json()
        )
        raise Refused(response.json()["error"])
    assert response.status_code < 400, (response.status_code, response.content[:300])
    return response


def _cli(user, *args):
    try:
        call_command(*args, "--user", user.username, stdout=StringIO(), stderr=StringIO())
    except CommandError as exc:
        if "may not" not in str(exc) and "another approver must decide" not in str(exc):
            raise  # not a refusal: a failure the test must show
        raise Refused(str(exc)) from None


def _admin(user, method, url, data=None):
    client = Client()
    client.force_login(user)
    response = getattr(client, method)(url, data or {}, follow=True)
    if response.status_code == 403 or response.redirect_chain and "/login/" in response.redirect_chain[-1][0]:
        raise Refused(f"the admin answered {response.status_code}")  # no role to use the admin, or this page
    assert response.status_code == 200, response.status_code
    said = [str(message) for message in response.context["messages"]]
    form = response.context.get("form")
    if form is not None and hasattr(form, "non_field_errors"):
        said += list(form.non_field_errors())
    refusals = [text for text in said if "may not" in text or "another approver must decide" in text]
    if refusals:
        raise Refused(refusals[0])  # the service's refusal, as the admin shows it
    return response


# --- the worlds ---------------------------------------------------------------------------------------


@pytest.fixture
def world(people, train, register, promote, put_on_traffic, serving, django_capture_on_commit_callbacks):
    """Builds what an operation needs, by name, once per test."""
    lee = people["lee"]

    class World:
        def queued_run(self):
            with django_capture_on_commit_callbacks(execute=False):
                return _launch(lee)

        def finished_run(self):
            return train(by=lee)

        def version(self):
            return register()

        def pending_request(self):
            return registry_services.promotion_request_create(
                version=register(), to_stage="staging", reason="try it", by=lee
            )

        def production_history(self):
            v1, v2 = register(), register()
            promote(v1)
            promote(v2)
            return v1, v2

        def production_and_candidate(self):
            production = register()
            promote(production)
            return production, register()

        def canary(self):
            production, candidate = self.production_and_candidate()
            put_on_traffic(candidate, percent=20)
            return Deployment.objects.get(mode="canary", status="active")

        def monitored_version(self):
            from monitoring.services import drift_reference_build

            production, _ = self.production_and_candidate()
            drift_reference_build(version=production)
            return production

        def runs_owned_by_each(self):
            runs = {}
            for user in people.values():
                run = self.queued_run()
                Run.objects.filter(pk=run.pk).update(created_by=user)
                runs[user.pk] = run
            return runs

        def crm(self):
            from tests.serving.crm.helpers import churn_promote, churn_version_register, customers_make

            churn_promote(churn_version_register(by=lee), scientist=lee, approver=people["approver"])
            return customers_make(3)[0]

        def logged_prediction(self):
            self.production_and_candidate()
            response = _api(lee, "post", "/api/v1/models/iris-clf/predict", {"instances": [IRIS_ROW]})
            return response.json()["request_id"]

    return World()


def _launch(user):
    from experiments import services

    return services.run_launch(experiment="roles", dataset="iris", algorithm="random_forest", by=user)


# --- the operations: (world) -> context; surface -> action(user, context); effect(context) -> bool ----------


def _launch_run():
    form = {"experiment": "roles", "dataset": "iris", "algorithm": "random_forest", "sweep_metric": "accuracy"}
    return {
        "setup": lambda world: None,
        "effect": lambda ctx: Run.objects.filter(experiment__name="roles").exists(),
        "api": lambda u, ctx: _api(
            u, "post", "/api/v1/runs", {k: form[k] for k in ("experiment", "dataset", "algorithm")}
        ),
        "cli": lambda u, ctx: _cli(
            u, "train", "--experiment", "roles", "--dataset", "iris", "--algorithm", "random_forest", "--queue"
        ),
        "admin": lambda u, ctx: _admin(u, "post", reverse("admin:experiments_run_launch"), form),
    }


def _csv():
    return SimpleUploadedFile("d.csv", b"a,b,label\n1,2,x\n3,4,y\n5,6,x\n7,8,y\n", content_type="text/csv")


OPERATIONS = {
    "launch a run or sweep": _launch_run(),
    "upload a dataset": {
        "setup": lambda world: None,
        "effect": lambda ctx: DatasetVersion.objects.filter(name="roles-data").exists(),
        "api": lambda u, ctx: _api(
            u, "post", "/api/v1/datasets", {"name": "roles-data", "target": "label", "file": _csv()}, fmt="multipart"
        ),
        "admin": lambda u, ctx: _admin(
            u,
            "post",
            reverse("admin:experiments_datasetversion_add"),
            {"name": "roles-data", "target": "label", "file": _csv()},
        ),
    },
    "stop someone else's run": {
        "setup": lambda world: world.queued_run(),
        "effect": lambda run: Run.objects.get(pk=run.pk).status == Run.Status.KILLED,
        "api": lambda u, run: _api(u, "post", f"/api/v1/runs/{run.pk}/kill", {}),
        "admin": lambda u, run: _admin(
            u,
            "post",
            reverse("admin:experiments_run_changelist"),
            {"action": "kill_runs", "_selected_action": [run.pk]},
        ),
    },
    "register a version, also as a breaking change": {
        "setup": lambda world: world.finished_run(),
        "effect": lambda run: ModelVersion.objects.filter(run=run).exists(),
        "api": lambda u, run: _api(u, "post", "/api/v1/models/roles-model/versions", {"run_id": run.pk}),
        "cli": lambda u, run: _cli(u, "register", str(run.pk), "roles-model"),
        "admin": lambda u, run: _admin(
            u,
            "post",
            reverse("admin:registry_modelversion_register") + f"?run={run.pk}",
            {"model": "__new__", "new_name": "roles-model"},
        ),
    },
    "edit a model's documentation and gate": {
        "setup": lambda world: world.version().model,
        "effect": lambda model: RegisteredModel.objects.get(pk=model.pk).description == "edited",
        "admin": lambda u, model: _admin(
            u,
            "post",
            reverse("admin:registry_registeredmodel_change", args=[model.pk]),
            {
                "description": "edited",
                "intended_use": "",
                "tags": "{}",
                "metric_thresholds": "{}",
                "owner": "",
                "versions-TOTAL_FORMS": "0",  # the versions inline is read-only, but its management form is sent
                "versions-INITIAL_FORMS": "0",
            },
        ),
    },
    "request a promotion": {
        "setup": lambda world: world.version(),
        "effect": lambda version: PromotionRequest.objects.filter(version=version).exists(),
        "api": lambda u, v: _api(
            u,
            "post",
            f"/api/v1/models/iris-clf/versions/{v.version}/promotion-requests",
            {"to_stage": "staging", "reason": "r"},
        ),
        "cli": lambda u, v: _cli(
            u, "request_promotion", "iris-clf", str(v.version), "--to", "staging", "--reason", "r"
        ),
        "admin": lambda u, v: _admin(
            u,
            "post",
            reverse("admin:registry_modelversion_request_promotion", args=[v.pk]),
            {"to_stage": "Staging", "reason": "r"},
        ),
    },
    "approve someone else's request": {
        "setup": lambda world: world.pending_request(),
        "effect": lambda r: PromotionRequest.objects.get(pk=r.pk).status == "APPROVED",
        "api": lambda u, r: _api(u, "post", f"/api/v1/promotion-requests/{r.pk}/approve", {"comment": "ok"}),
        "cli": lambda u, r: _cli(u, "approve_promotion", str(r.pk)),
        "admin": lambda u, r: _admin(
            u, "post", reverse("admin:registry_promotionrequest_decide", args=[r.pk]), {"_approve": "1"}
        ),
    },
    "reject someone else's request": {
        "setup": lambda world: world.pending_request(),
        "effect": lambda r: PromotionRequest.objects.get(pk=r.pk).status == "REJECTED",
        "api": lambda u, r: _api(u, "post", f"/api/v1/promotion-requests/{r.pk}/reject", {"comment": "no"}),
        "cli": lambda u, r: _cli(u, "reject_promotion", str(r.pk), "--comment", "no"),
        "admin": lambda u, r: _admin(
            u, "post", reverse("admin:registry_promotionrequest_decide", args=[r.pk]), {"_reject": "1", "comment": "no"}
        ),
    },
    "request a rollback": {
        "setup": lambda world: world.production_history(),
        "effect": lambda versions: PromotionRequest.objects.filter(kind="rollback").exists(),
        "api": lambda u, vs: _api(u, "post", "/api/v1/models/iris-clf/rollback", {"reason": "r"}),
        "cli": lambda u, vs: _cli(u, "rollback", "iris-clf", "--reason", "r"),
        "admin": lambda u, vs: _admin(
            u, "post", reverse("admin:registry_registeredmodel_rollback", args=[vs[0].model_id]), {"reason": "r"}
        ),
    },
    "roll back at once, in an emergency": {
        "setup": lambda world: world.production_history(),
        "effect": lambda vs: ModelVersion.objects.get(pk=vs[0].pk).stage == "Production",
        "api": lambda u, vs: _api(u, "post", "/api/v1/models/iris-clf/rollback", {"reason": "r", "emergency": True}),
        "cli": lambda u, vs: _cli(u, "rollback", "iris-clf", "--reason", "r", "--emergency"),
        "admin": lambda u, vs: _admin(
            u,
            "post",
            reverse("admin:registry_registeredmodel_rollback", args=[vs[0].model_id]),
            {"reason": "r", "emergency": "on"},
        ),
    },
    "request a canary or shadow": {
        "setup": lambda world: world.production_and_candidate()[1],
        "effect": lambda v: PromotionRequest.objects.filter(version=v, kind="canary").exists(),
        "api": lambda u, v: _api(
            u,
            "post",
            f"/api/v1/models/iris-clf/versions/{v.version}/traffic-requests",
            {"mode": "canary", "traffic_percent": 10, "reason": "r"},
        ),
        "cli": lambda u, v: _cli(
            u, "request_traffic", "iris-clf", str(v.version), "--mode", "canary", "--percent", "10", "--reason", "r"
        ),
        "admin": lambda u, v: _admin(
            u,
            "post",
            reverse("admin:serving_deployment_request"),
            {"version": v.pk, "mode": "canary", "traffic_percent": 10, "environment": "production", "reason": "r"},
        ),
    },
    "retire a canary or shadow": {
        "setup": lambda world: world.canary(),
        "effect": lambda d: Deployment.objects.get(pk=d.pk).status == "retired",
        "admin": lambda u, d: _admin(
            u, "post", reverse("admin:serving_deployment_changelist"), {"action": "retire", "_selected_action": [d.pk]}
        ),
    },
    "send feedback, correct it": {
        "setup": lambda world: world.logged_prediction(),
        "effect": lambda rid: PredictionLog.objects.get(request_id=rid, deployment_mode="primary").actual == "setosa",
        "api": lambda u, rid: _api(u, "post", f"/api/v1/predictions/{rid}/feedback", {"actual": "setosa"}),
    },
    "predict with a version that is not in Staging or Production": {
        "setup": lambda world: world.production_and_candidate()[1],
        "effect": None,  # allowed when it answered
        "api": lambda u, v: _api(
            u, "post", f"/api/v1/models/iris-clf/versions/{v.version}/predict", {"instances": [IRIS_ROW]}
        ),
    },
    "predict with the deployed version": {
        "setup": lambda world: world.production_and_candidate()[0],
        "effect": None,
        "api": lambda u, v: _api(u, "post", "/api/v1/models/iris-clf/predict", {"instances": [IRIS_ROW]}),
    },
    "edit policies": {
        "setup": lambda world: None,
        "effect": lambda ctx: Policy.objects.filter(name="roles-policy").exists(),
        "admin": lambda u, ctx: _admin(
            u,
            "post",
            reverse("admin:governance_policy_add"),
            {
                "name": "roles-policy",
                "kind": "documentation",
                "enabled": "on",
                "required_fields": '["owner"]',
                "min_metrics": "{}",
            },
        ),
    },
    "edit webhooks, redeliver": {
        "setup": lambda world: None,
        "effect": lambda ctx: WebhookSubscription.objects.filter(name="roles-hook").exists(),
        "admin": lambda u, ctx: _admin(
            u,
            "post",
            reverse("admin:governance_webhooksubscription_add"),
            {"name": "roles-hook", "url": "http://127.0.0.1:9/", "secret": "s", "enabled": "on"},
        ),
    },
    "read the audit log": {
        "setup": lambda world: None,
        "effect": None,
        "api": lambda u, ctx: _api(u, "get", "/api/v1/audit-log"),
        "admin": lambda u, ctx: _admin(u, "get", reverse("admin:governance_auditentry_changelist")),
    },
    "read runs, datasets, the registry, deployments": {
        "setup": lambda world: world.version(),
        "effect": None,
        "api": lambda u, v: [_api(u, "get", url) for url in ("/api/v1/runs", "/api/v1/models/iris-clf/versions")],
        "admin": lambda u, v: [
            _admin(u, "get", reverse(name, args=args))
            for name, args in (
                ("admin:experiments_run_changelist", []),
                ("admin:experiments_datasetversion_changelist", []),
                ("admin:registry_modelversion_change", [v.pk]),
                ("admin:serving_deployment_changelist", []),
            )
        ],
    },
    "stop a run they launched": {
        # Each role's own queued run (made by a launcher, then owned by the role), stopped by that role.
        "setup": lambda world: world.runs_owned_by_each(),
        "effect": lambda runs: Run.objects.filter(pk__in=[run.pk for run in runs.values()], status="KILLED").exists(),
        "api": lambda u, runs: _api(u, "post", f"/api/v1/runs/{runs[u.pk].pk}/kill", {}),
        "admin": lambda u, runs: _admin(
            u,
            "post",
            reverse("admin:experiments_run_changelist"),
            {"action": "kill_runs", "_selected_action": [runs[u.pk].pk]},
        ),
    },
    "edit periodic tasks": {
        "setup": lambda world: IntervalSchedule.objects.create(every=1, period=IntervalSchedule.HOURS),
        "effect": lambda interval: PeriodicTask.objects.filter(name="roles-task").exists(),
        "admin": lambda u, interval: _admin(
            u,
            "post",
            reverse("admin:django_celery_beat_periodictask_add"),
            {
                "name": "roles-task",
                "regtask": "experiments.reap_lost_runs",
                "interval": interval.pk,
                "args": "[]",
                "kwargs": "{}",
                "headers": "{}",
                "enabled": "on",
            },
        ),
    },
}

OPERATIONS.update(
    {
        "compute a model's drift now": {
            "setup": lambda world: world.monitored_version(),
            "effect": lambda v: DriftRun.objects.exists(),
            "api": lambda u, v: _api(u, "post", "/api/v1/models/iris-clf/drift?window=24h", {}),
        },
        "update a customer's segment from a prediction": {
            "setup": lambda world: world.crm(),
            "effect": lambda c: SegmentChange.objects.filter(customer_id=c.customer_id).exists(),
            "api": lambda u, c: _api(u, "post", f"/crm_segment_update?customer_id={c.customer_id}", {}),
            "admin": lambda u, c: _admin(
                u,
                "post",
                reverse("admin:serving_customer_changelist"),
                {"action": "update_segment_now", "_selected_action": [c.pk]},
            ),
        },
        "refresh every customer's segment, stop, resume": {
            "setup": lambda world: world.crm(),
            "effect": lambda c: CrmRefresh.objects.exists(),
            "api": lambda u, c: _api(u, "post", "/api/v1/crm/refreshes", {"scope": "all"}),
            "cli": lambda u, c: _cli(u, "crm_refresh", "--all", "--queue"),
            "admin": lambda u, c: _admin(u, "post", reverse("admin:serving_crmrefresh_start"), {"scope": "all"}),
        },
        "edit the CRM settings: model and mapping": {
            "setup": lambda world: world.crm(),
            "effect": lambda c: "renew" in str(CrmSettings.objects.values_list("mapping", flat=True).first()),
            "api": lambda u, c: _api(u, "put", "/api/v1/crm/settings", {"mapping": _RENEW_MAPPING}),
            "admin": lambda u, c: _admin(
                u,
                "post",
                reverse("admin:serving_crmsettings_change", args=[CrmSettings.objects.get().pk]),
                {"model_name": "churn", "mapping": json.dumps(_RENEW_MAPPING), "reason": "roles"},
            ),
        },
    }
)


def _firing_alert(world):
    from monitoring.models import Alert, AlertRule
    from monitoring.services import alert_rules_defaults_ensure

    version = world.version()
    alert_rules_defaults_ensure()
    now = timezone.now()
    return Alert.objects.create(
        rule=AlertRule.objects.get(kind="error_rate", model__isnull=True),
        model=version.model,
        state="firing",
        summary="roles",
        opened_at=now,
        fired_at=now,
        last_evaluated_at=now,
    )


def _acknowledged(alert):
    alert.refresh_from_db()
    return alert.acknowledged_at is not None


def _rule_and_policy_added(u, version):
    _admin(
        u,
        "post",
        reverse("admin:monitoring_alertrule_add"),
        {
            "name": "roles-rule", "kind": "latency", "model": version.model_id, "enabled": "on", "threshold": "3",
            "window_hours": "1", "min_samples": "50", "for_evaluations": "2", "effect_size_floor": "0.1",
            "features": "[]", "accuracy_source": "live", "remind_every_hours": "4", "email_to": "",
        },
    )  # fmt: skip
    _admin(
        u,
        "post",
        reverse("admin:monitoring_retrainingpolicy_add"),
        {
            "model": version.model_id, "drift_windows": "3", "accuracy_windows": "3", "min_labelled": "30",
            "cooldown_hours": "24", "request_stage": "Production",
        },
    )  # fmt: skip


OPERATIONS.update(
    {
        "acknowledge or silence an alert": {
            "setup": _firing_alert,
            "effect": _acknowledged,
            "cli": lambda u, alert: _cli(u, "alerts", "ack", str(alert.pk)),
            "admin": lambda u, alert: _admin(
                u,
                "post",
                reverse("admin:monitoring_alert_changelist"),
                {"action": "acknowledge", "_selected_action": [alert.pk]},
            ),
        },
        "edit alert rules and retraining policies": {
            "setup": lambda world: world.version(),
            "effect": lambda version: (
                AlertRule.objects.filter(name="roles-rule").exists()
                and RetrainingPolicy.objects.filter(model=version.model).exists()
            ),
            "admin": _rule_and_policy_added,
        },
    }
)

_RENEW_MAPPING = {"rules": [{"segment": "renew", "class": "yes", "min_probability": 0.5}, {"segment": "loyal"}]}

CASES = [
    pytest.param(operation, surface, id=f"{operation} / {surface}")
    for operation, spec in OPERATIONS.items()
    for surface in ("api", "cli", "admin")
    if surface in spec
]


_COLUMNS = ("scientist", "approver", "auditor", "engineer", "application", "nobody")


def _readme_table():
    """{operation: (surfaces, roles allowed)} from the README's role table."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = text[text.index("| operation (surfaces) |") :].split("\n\n", 1)[0].splitlines()[2:]
    rows = {}
    for line in table:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        name, surfaces = re.match(r"(.*) \((.*)\)$", cells[0]).groups()
        allowed = {role for role, cell in zip(_COLUMNS, cells[1:], strict=True) if cell.startswith("✔")}
        rows[name] = ({surface.strip().lower() for surface in surfaces.split(",")}, allowed)
    return rows


def test_the_readme_table_is_the_table_tested_here_operation_by_operation():
    readme = _readme_table()
    assert set(readme) == set(ALLOWED) == set(OPERATIONS)
    for operation, (surfaces, allowed) in readme.items():
        assert allowed == ALLOWED[operation] - {"superuser"}, operation  # the superuser may do everything
        assert surfaces == {s for s in ("api", "cli", "admin") if s in OPERATIONS[operation]}, operation


@pytest.mark.parametrize(("operation", "surface"), CASES)
def test_each_role_may_do_exactly_what_the_table_says(operation, surface, people, world):
    spec = OPERATIONS[operation]
    context = spec["setup"](world)
    outcomes = {}
    for role in ROLES:
        with transaction.atomic():
            try:
                spec[surface](people[role], context)
            except Refused:
                outcomes[role] = False
            else:
                outcomes[role] = spec["effect"](context) if spec["effect"] else True
            transaction.set_rollback(True)  # the next role meets the same world
    expected = {
        role: role == "superuser" or (role in ALLOWED[operation] and not (surface == "admin" and role in API_ONLY))
        for role in ROLES
    }
    assert outcomes == expected


@pytest.mark.parametrize("surface", ["api", "cli", "admin"])
def test_four_eyes_on_every_surface_even_for_someone_who_may_both_ask_and_decide(surface, register, django_user_model):
    lead = _member(django_user_model, "lead", "Data scientist", "Approver")
    version = register()
    for decision in ("approve", "reject"):
        request = registry_services.promotion_request_create(version=version, to_stage="staging", reason="r", by=lead)
        if surface == "api":
            with pytest.raises(Refused, match="lead asked for request"):
                _api(lead, "post", f"/api/v1/promotion-requests/{request.pk}/{decision}", {"comment": "mine"})
        elif surface == "cli":
            with pytest.raises(Refused, match="lead asked for request"):
                _cli(
                    lead,
                    f"{decision}_promotion",
                    str(request.pk),
                    *(["--comment", "mine"] if decision == "reject" else []),
                )
        else:
            button = {"_approve": "1"} if decision == "approve" else {"_reject": "1", "comment": "mine"}
            response = Client()
            response.force_login(lead)
            page = response.post(
                reverse("admin:registry_promotionrequest_decide", args=[request.pk]), button, follow=True
            )
            assert "another approver must decide it" in page.content.decode()
        request.refresh_from_db()
        assert request.status == "PENDING"
        PromotionRequest.objects.filter(pk=request.pk).update(status="REJECTED")  # clear the way for the next
