"""The fleet overview and a model's monitoring page, as a reader of the registry sees them, and who may not."""

import re

import pytest
from django.urls import reverse
from django.utils import timezone

from core.errors import NotPermitted
from monitoring import dashboards, services
from monitoring.models import Alert, AlertRule
from registry.models import RegisteredModel
from tests.monitoring.seed import seed_fleet

pytestmark = pytest.mark.django_db


@pytest.fixture
def fleet(churn_version, churn_frame, scientist, promote, put_on_traffic, application):
    return seed_fleet(
        churn_version=churn_version,
        churn_frame=churn_frame,
        scientist=scientist,
        promote=promote,
        put_on_traffic=put_on_traffic,
        application=application,
    )


def _svgs(page):
    return re.findall(r'<svg [^>]*aria-label="([^"]*)"', page)


def test_fleet_and_model_pages(client, fleet, auditor, django_assert_max_num_queries):
    now = timezone.now()
    with django_assert_max_num_queries(9):  # whatever the fleet's size: no query per model
        (health,) = dashboards.fleet_overview(by=auditor, start=now - timezone.timedelta(hours=24), end=now)
    # 12 hours of 12 requests of v1, and 6 requests refused before a version was chosen.
    assert (health.name, health.version, health.requests, health.errors) == ("churn", 1, 150, 6)
    assert health.error_rate == pytest.approx(0.04)
    assert health.latency_p95_ms > 1
    assert health.labelled == 45
    assert 0 <= health.accuracy <= 1
    assert health.validation_accuracy is not None
    assert health.estimated_accuracy is not None
    assert [(d.environment, d.mode, d.version, d.traffic_percent) for d in health.canary] == [
        ("production", "canary", 2, 20.0)
    ]
    assert health.drift is not None
    assert health.drift.status == "ok"
    assert health.drift.n_columns == 10
    assert sum(health.hourly_requests) == 150 + 36  # the sparkline: every version, the canary too

    client.force_login(auditor)
    fleet_page = client.get(reverse("admin:monitoring_fleetoverview_changelist") + "?window=24h")
    assert fleet_page.status_code == 200
    page = fleet_page.content.decode()
    assert "churn: requests per hour" in _svgs(page)
    assert "v2 canary 20 %" in page
    assert "4.0%" in page  # the error rate
    assert reverse("admin:monitoring_model_dashboard", args=["churn"]) in page
    assert health.firing == []

    # An alert firing on the model shows in its row, links to the alert, and makes it unhealthy.
    services.alert_rules_defaults_ensure()
    rule = AlertRule.objects.filter(model__isnull=True, kind=AlertRule.Kind.ERROR_RATE).get()
    alert = Alert.objects.create(
        rule=rule, model=RegisteredModel.objects.get(name="churn"), summary="12% of 50 requests failed",
        value=0.12, threshold=0.1,
        opened_at=now, fired_at=now, last_evaluated_at=now, state=Alert.State.FIRING,
    )  # fmt: skip
    (health,) = dashboards.fleet_overview(by=auditor, start=now - timezone.timedelta(hours=24), end=now)
    assert health.firing == [alert]
    assert health.status == "unhealthy"
    assert "alert firing: 12% of 50 requests failed" in health.problems
    page = client.get(reverse("admin:monitoring_fleetoverview_changelist") + "?window=24h").content.decode()
    assert reverse("admin:monitoring_alert_change", args=[alert.pk]) in page

    url = reverse("admin:monitoring_model_dashboard", args=["churn"])
    page = client.get(url + "?window=24h").content.decode()
    titles = " | ".join(_svgs(page))
    for expected in (
        "Requests and errors per hour",
        "Error rate",
        "Latency of v1 (primary)",
        "Confidence of the predicted class",
        "Predicted class mix",
        "Accuracy of v1 against validation",
        "p95 latency by version and mode",
        "Error rate by version and mode",
        "Drift of v1 per column",
        "monthly_charges: reference and current",  # the most drifted column, shown by default
    ):
        assert expected in titles, titles
    assert "limit 10%" in page
    assert "validation 0." in page
    assert "monthly_charges at " in page
    assert ", drifted</title>" in page
    assert "training labels (v1)" in page

    page = client.get(url + "?window=24h&version=2&feature=contract_type").content.decode()
    assert "Accuracy of v2 against validation" in page
    assert "contract_type: reference and current, on the categories" in page

    response = client.get(url + "?window=yesterday&version=x", follow=True)
    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"]]
    assert any(m.startswith("window: ") for m in shown)
    assert any(m.startswith("version: ") for m in shown)
    assert client.get(reverse("admin:monitoring_model_dashboard", args=["nope"])).status_code == 404

    v1, _ = fleet
    registry_page = client.get(reverse("admin:registry_registeredmodel_change", args=[v1.model.pk])).content.decode()
    assert f'href="{url}"' in registry_page  # the model's registry page links to its monitoring page

    week = dashboards.model_dashboard(by=auditor, model_name="churn", start=now - timezone.timedelta(days=7), end=now)
    assert week.granularity == "day"


def test_pages_refuse_who_may_not_read_the_registry(client, application, churn_version):
    with pytest.raises(NotPermitted, match="may not read monitoring"):
        dashboards.fleet_overview(by=application, start=timezone.now(), end=timezone.now())
    application.is_staff = True
    application.save()
    client.force_login(application)
    assert client.get(reverse("admin:monitoring_fleetoverview_changelist")).status_code == 403
    assert client.get(reverse("admin:monitoring_model_dashboard", args=["churn"])).status_code == 403
    assert client.get(reverse("admin:monitoring_report_changelist")).status_code == 403


def test_empty_fleet_says_so(client, auditor):
    client.force_login(auditor)
    page = client.get(reverse("admin:monitoring_fleetoverview_changelist")).content.decode()
    assert "No model is deployed" in page
    index = client.get(reverse("admin:app_list", args=["monitoring"])).content.decode()
    assert "Fleet overview" in index
    assert "Reports" in index


def test_model_page_before_any_traffic(client, auditor, churn_version):
    client.force_login(auditor)
    response = client.get(reverse("admin:monitoring_model_dashboard", args=["churn"]))
    assert response.status_code == 200
    page = response.content.decode()
    assert "No traffic in this range" in page
    assert "No drift run in this range" in page
    assert "not deployed" in page
