"""The fleet overview and a model's page in headless Chromium, with real data: every chart drawn, no page
error. The screenshots go to the test's temporary directory, or with SCREENSHOTS_DIR set (`make
screenshots`) to docs/screenshots/, which the README shows."""

import os
from pathlib import Path

import pytest
from django.urls import reverse

from monitoring.models import DriftRun
from tests.browser import CHROMIUM, Browser
from tests.monitoring.seed import seed_fleet

# Per chart: its title and how many data marks it draws (lines, bars, cells); the empty-state boxes.
MEASURE = """({
  charts: [...document.querySelectorAll('#content-main svg[role=img]')].map(svg => ({
    title: svg.getAttribute('aria-label'),
    marks: svg.querySelectorAll('polyline[points]:not([points=""]), rect > title, circle').length,
    width: svg.getBoundingClientRect().width,
  })),
  empty: [...document.querySelectorAll('.mon-empty')].map(e => e.textContent.trim()),
  rows: document.querySelectorAll('#content-main tbody tr').length,
  overflow: document.documentElement.scrollWidth - window.innerWidth,
})"""

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM, reason="needs Debian's chromium (apt-get install chromium)"),
]


def _charts_drawn(page, *, at_least):
    assert page["status"] == 200, page
    assert not page["errors"], page["errors"]
    charts = page["charts"]
    assert len(charts) >= at_least, charts
    empty = [chart["title"] for chart in charts if chart["marks"] == 0 or chart["width"] < 50]
    assert not empty, f"empty charts: {empty}"
    assert not page["empty"], page["empty"]
    assert page["overflow"] <= 0, "the page is wider than the window"


def test_fleet_and_model_pages_in_chromium(
    tmp_path, live_server, client, churn_version, churn_frame, scientist, promote, put_on_traffic, application, auditor
):
    seed_fleet(
        churn_version=churn_version,
        churn_frame=churn_frame,
        scientist=scientist,
        promote=promote,
        put_on_traffic=put_on_traffic,
        application=application,
    )
    client.force_login(auditor)  # an auditor reads the registry, so reads monitoring
    fleet_url = live_server.url + reverse("admin:monitoring_fleetoverview_changelist") + "?window=24h"
    model_url = live_server.url + reverse("admin:monitoring_model_dashboard", args=["churn"]) + "?window=24h"
    screenshots = Path(os.environ.get("SCREENSHOTS_DIR") or tmp_path)
    with Browser() as browser:
        browser.cookie("sessionid", client.cookies["sessionid"].value, url=live_server.url)

        def visit(url, name=None):
            page = browser.open(url, width=1400, measure=MEASURE)
            if name:
                browser.screenshot(screenshots / name, full_page=True)
            return page

        fleet = visit(fleet_url, "fleet.png")
        model = visit(model_url, "monitoring-model.png")
        report = visit(live_server.url + reverse("admin:monitoring_report_changelist") + "?since=7d", "reports.png")
        missing = visit(live_server.url + reverse("admin:monitoring_model_dashboard", args=["nope"]))
        jobs = visit(live_server.url + reverse("admin:monitoring_monitoringjob_changelist"), "monitoring-jobs.png")
        latest_drift = DriftRun.objects.order_by("-computed_at").first()
        drift = visit(
            live_server.url + reverse("admin:monitoring_driftrun_change", args=[latest_drift.pk]), "drift-run.png"
        )
    _charts_drawn(fleet, at_least=1)
    assert fleet["rows"] == 1
    # Traffic (2), latency, confidence, class mix, accuracy, canary vs primary (2), heatmap, feature detail.
    _charts_drawn(model, at_least=10)
    titles = " | ".join(chart["title"] for chart in model["charts"])
    for expected in (
        "Requests and errors",
        "Error rate",
        "Latency of v1",
        "Confidence",
        "Predicted class mix",
        "Accuracy of v1",
        "p95 latency by version and mode",
        "Drift of v1",
        "monthly_charges",
    ):
        assert expected in titles, titles
    assert report["status"] == 200
    assert not report["errors"], report["errors"]
    assert report["rows"] >= 3  # an experiment, the primary and the canary
    assert report["overflow"] <= 0
    assert missing["status"] == 404
    for page in (jobs, drift):
        assert page["status"] == 200, page
        assert not page["errors"], page["errors"]
        assert page["overflow"] <= 0
    assert jobs["rows"] >= 2  # the seed ran the aggregate and drift jobs
    assert (screenshots / "fleet.png").stat().st_size > 10_000
    assert (screenshots / "monitoring-model.png").stat().st_size > 50_000
