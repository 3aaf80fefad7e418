"""Every main admin page in headless Chromium at 1280 and 1920 px: no horizontal overflow of the main table, no
element taller than the window that should not be, no console error. `UPDATE_SCREENSHOTS=1` refreshes
docs/screenshots/ (at 1280 px) from the same run.
"""

import os
import time
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rest_framework.test import APIClient

from experiments import services as experiment_services
from registry import services as registry_services
from serving.crm import services as crm_services
from serving.models import Customer
from tests.browser import CHROMIUM, Browser
from tests.e2e import processes
from tests.helpers import worker_runs_what_is_queued
from tests.serving.crm.helpers import churn_promote, churn_version_register, customers_make

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"),
    pytest.mark.django_db(transaction=True),
]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
WIDTHS = (1280, 1920)
IRIS = {"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2}


def _large_upload(name, bad_row, by, settings):
    """A CSV over the inline limit, through the upload service (staged; a worker profiles it); with
    `bad_row`, that row's monthly charges are text, which the worker refuses."""
    settings.DATASET_INLINE_MAX_BYTES = 1000
    lines = [b"tenure_months,monthly_charges,churned"]
    lines += [
        b"%d,%s,%s"
        % (i, b"n/a" if bad_row and i == bad_row * 100 else b"%d.5" % (20 + i % 50), b"yn"[i % 2 : i % 2 + 1])
        for i in range(2000)
    ]
    file = SimpleUploadedFile(f"{name}.csv", b"\n".join(lines) + b"\n", content_type="text/csv")
    return experiment_services.dataset_version_upload_file(name=name, file=file, target="churned", by=by).upload


@pytest.fixture
def site(production, train, scientist, approver, serving, django_user_model, live_server, settings):
    """A site with something on every page: v1 in Production serving predictions, v2 waiting for a decision,
    a few runs to compare, audit entries, CRM customers with segments written and a refresh; an admin signed in."""
    runs = [train(n_estimators=n) for n in (5, 10)]
    sweep = experiment_services.run_launch(
        experiment="iris-sweep",
        dataset="iris",
        algorithm="gradient_boosting",
        sweep={"n_estimators": [5, 10], "max_depth": [2]},
        by=scientist,
        inline=True,
    )
    candidate = registry_services.model_version_register(run_id=runs[1].pk, model_name="iris-clf", by=scientist)
    request = registry_services.promotion_request_create(
        version=candidate, to_stage="production", reason="more trees", by=scientist
    )
    api = APIClient()
    api.force_authenticate(scientist)
    for _ in range(3):
        api.post("/api/v1/models/iris-clf/predict", {"instances": [IRIS, IRIS]}, format="json")
    api.post("/api/v1/models/iris-clf/predict", {"instances": [{**IRIS, "petal_width_cm": "wide"}]}, format="json")
    admin = django_user_model.objects.create_superuser("root", password="x")
    churn_promote(churn_version_register(by=scientist), scientist=scientist, approver=approver)
    customers_make(30)
    for customer in Customer.objects.order_by("customer_id")[:3]:
        crm_services.customer_segment_update(customer_id=customer.customer_id, by=admin)
    crm_services.crm_refresh_start(scope="all", by=admin, inline=True)
    with worker_runs_what_is_queued():  # queued when the upload commits, profiled at once
        stored, refused = (
            _large_upload(name, bad, scientist, settings) for name, bad in (("churn-q3", 0), ("churn-q4", 7))
        )
    _large_upload("churn-q4b", 9, scientist, settings)  # no worker has taken it yet
    processes.purge_queues()
    client = Client()
    client.force_login(admin)
    children = [child.pk for child in sweep.children.all()]
    pages = {
        "home": "/admin/",
        "runs": "/admin/experiments/run/",
        "run": f"/admin/experiments/run/{runs[1].pk}/change/",
        "compare": f"/admin/experiments/run/compare/?ids={runs[0].pk},{runs[1].pk},{','.join(map(str, children))}",
        "launch": "/admin/experiments/run/launch/",
        "models": "/admin/registry/registeredmodel/",
        "model": f"/admin/registry/registeredmodel/{production.model.pk}/change/",
        "version": f"/admin/registry/modelversion/{candidate.pk}/change/",
        "register": f"/admin/registry/modelversion/register/?run={runs[0].pk}",
        "request-promotion": f"/admin/registry/modelversion/{candidate.pk}/request-promotion/",
        "approve": f"/admin/registry/promotionrequest/{request.pk}/change/",
        "deployments": "/admin/serving/deployment/",
        "predictions": "/admin/serving/predictionlog/",
        "audit": "/admin/governance/auditentry/",
        "crm-customer": f"/admin/serving/customer/{Customer.objects.order_by('customer_id').first().pk}/change/",
        "crm-changes": "/admin/serving/segmentchange/",
        "crm-refreshes": "/admin/serving/crmrefresh/",
        "dataset-uploads": "/admin/experiments/datasetupload/",
        "dataset-upload": f"/admin/experiments/datasetupload/{refused.pk}/change/",
        "dataset-upload-stored": f"/admin/experiments/datasetupload/{stored.pk}/change/",  # not in the README
    }
    return {"url": live_server.url, "session": client.cookies["sessionid"].value, "pages": pages}


def test_admin_pages_fit_the_window_and_log_no_errors(site):
    started = time.monotonic()
    update = os.environ.get("UPDATE_SCREENSHOTS") == "1"
    problems = []
    with Browser() as browser:
        browser.cookie("sessionid", site["session"], url=site["url"])
        for name, path in site["pages"].items():
            for width in WIDTHS:
                page = browser.open(site["url"] + path, width=width)
                where = f"{name} at {width} px ({path})"
                if "Log in" in page["title"] or page["h1"].strip() in {"Server Error (500)", "Not Found"}:
                    problems.append(f"{where}: {page['title']!r}")
                if page["overflow"] > 2:
                    problems.append(f"{where}: the main table overflows by {page['overflow']} px")
                if page["pageOverflow"] > 2:
                    problems.append(f"{where}: the page scrolls sideways by {page['pageOverflow']} px")
                if page["tall"]:
                    problems.append(f"{where}: taller than the window: {page['tall']}")
                problems += [f"{where}: {error}" for error in page["errors"]]
                if update and width == 1280:
                    browser.screenshot(SCREENSHOTS / f"{name}.png")
    assert not problems, "\n".join(problems)
    assert time.monotonic() - started < 60
