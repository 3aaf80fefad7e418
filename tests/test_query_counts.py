"""The hot read paths answer in a fixed number of queries, however many rows they show (an N+1 fails here).

Each test measures a page or endpoint with a few rows, then with more, and pins both counts: the same
number, written down, so that a change to either shows up in review.
"""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.test import APIClient

from tests.serving.conftest import IRIS_ROW

pytestmark = pytest.mark.django_db


def _queries(call):
    """Queries of one call, after a first one has filled the per-process caches (content types, sessions)."""
    call()
    with CaptureQueriesContext(connection) as captured:
        response = call()
    assert response.status_code == 200, response.status_code
    return len(captured)


@pytest.fixture
def root(django_user_model):
    return django_user_model.objects.create_superuser("root", password="pw-root-1")


def _api(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_the_run_list_costs_the_same_for_one_run_or_many(train, root, client):
    client.force_login(root)
    api = _api(root)
    changelist = reverse("admin:experiments_run_changelist")

    def measure():
        return _queries(lambda: api.get("/api/v1/runs")), _queries(lambda: client.get(changelist))

    train()
    few = measure()
    for n in range(2, 6):
        train(n_estimators=n)
    assert measure() == few == (2, 10)


def test_the_version_page_costs_the_same_however_many_requests_and_stage_changes(register, promote, root, client):
    client.force_login(root)
    version = register()
    url = reverse("admin:registry_modelversion_change", args=[version.pk])
    few = _queries(lambda: client.get(url))
    for stage in ("staging", "production"):
        promote(version, stage)
    assert _queries(lambda: client.get(url)) == few == 11


def test_the_audit_log_costs_the_same_for_ten_entries_or_a_hundred(register, root, client, scientist):
    from registry import services

    client.force_login(root)
    api = _api(root)
    version = register()
    measure = (
        lambda: _queries(lambda: api.get("/api/v1/audit-log")),
        lambda: _queries(lambda: client.get(reverse("admin:governance_auditentry_changelist"))),
    )
    few = tuple(m() for m in measure)
    for i in range(30):
        services.registered_model_update(model=version.model, by=scientist, changes={"description": f"edit {i}"})
    assert tuple(m() for m in measure) == few == (2, 9)


def test_a_prediction_reads_nothing_once_its_route_is_loaded(production, serving, settings):
    settings.SERVING_REQUIRE_AUTH = False
    settings.PREDICTION_LOG_ENABLED = False  # the log is written by its own thread, off the request path
    client = APIClient()

    def ask():
        return client.post("/api/v1/models/iris-clf/predict", {"instances": [IRIS_ROW]}, format="json")

    with CaptureQueriesContext(connection) as first:
        ask()  # the first request of a process loads the route and the version
    # The active deployments, with their versions and model, in one query; the version recorded as the one
    # last served (the fallback after a restart) in one upsert.
    assert len(first) == 2, [q["sql"][:80] for q in first]
    assert _queries(ask) == 0


def test_the_alert_list_costs_the_same_for_one_alert_or_many(register, root, client):
    from django.utils import timezone

    from monitoring.models import Alert, AlertRule
    from monitoring.services import alert_rules_defaults_ensure

    client.force_login(root)
    api = _api(root)
    model = register().model
    alert_rules_defaults_ensure()
    now = timezone.now()

    def alert(kind):
        return Alert.objects.create(
            rule=AlertRule.objects.get(kind=kind, model__isnull=True), model=model, state="firing", summary=kind,
            opened_at=now, fired_at=now, last_evaluated_at=now, acknowledged_by=root, acknowledged_at=now,
        )  # fmt: skip

    changelist = reverse("admin:monitoring_alert_changelist")

    def measure():
        return _queries(lambda: api.get("/api/v1/alerts?state=firing")), _queries(lambda: client.get(changelist))

    alert("latency")
    few = measure()
    for kind in ("error_rate", "data_drift", "no_traffic"):
        alert(kind)
    assert measure() == few == (2, 8)
