"""The fleet overview and a model's monitoring page, as a reader of the registry sees them."""

import pytest
from django.urls import reverse

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


def test_fleet_page(client, fleet, auditor):
    client.force_login(auditor)
    page = client.get(reverse("admin:monitoring_fleetoverview_changelist") + "?window=24h").content.decode()
    open("/tmp/fleet.html", "w").write(page)
    assert "churn" in page


def test_model_page(client, fleet, auditor):
    client.force_login(auditor)
    page = client.get(reverse("admin:monitoring_model_dashboard", args=["churn"]) + "?window=24h").content.decode()
    open("/tmp/model.html", "w").write(page)
    assert "churn" in page
