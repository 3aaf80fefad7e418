"""The experiment and deployment reports through every surface: the admin, the API (JSON and CSV) and
`manage.py report`; each checked against the reader's role."""

import csv
import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from rest_framework.test import APIClient

from monitoring.reports import DEPLOYMENT_COLUMNS
from tests.monitoring.seed import seed_fleet

pytestmark = pytest.mark.django_db


def _client(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_reports_in_json_csv_cli_and_admin(
    client, churn_version, churn_frame, scientist, promote, put_on_traffic, application, auditor
):
    seed_fleet(
        churn_version=churn_version,
        churn_frame=churn_frame,
        scientist=scientist,
        promote=promote,
        put_on_traffic=put_on_traffic,
        application=application,
    )
    api = _client(auditor)
    body = api.get(reverse("report", args=["deployments"]), {"since": "7d"}).json()
    assert body["report"] == "deployments"
    rows = {(row["environment"], row["mode"]): row for row in body["rows"]}
    primary, canary = rows[("production", "primary")], rows[("production", "canary")]
    assert (primary["version"], primary["requested_by"], primary["approved_by"]) == (1, "dana", "alex")
    assert (canary["version"], canary["requested_by"], canary["approved_by"]) == (2, "eli", "alex")
    assert canary["traffic_percent"] == 20.0
    assert (primary["requests"], primary["rows"], primary["labelled"]) == (144, 720, 45)
    assert (canary["requests"], canary["labelled"]) == (36, 15)
    assert 0 <= primary["live_accuracy"] <= 1
    assert primary["since"] <= canary["since"]

    response = api.get(reverse("report", args=["deployments"]), {"since": "7d", "format": "csv"})
    assert response["Content-Type"].startswith("text/csv")
    assert "deployments-report.csv" in response["Content-Disposition"]
    table = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert list(table[0]) == DEPLOYMENT_COLUMNS
    assert {(row["mode"], row["approved_by"]) for row in table} == {("primary", "alex"), ("canary", "alex")}

    experiments = api.get(reverse("report", args=["experiments"])).json()["rows"]
    (row,) = [r for r in experiments if r["experiment"] == "monitoring-tests"]
    assert (row["runs"], row["finished"], row["failed"]) == (2, 2, 0)
    assert row["best"]["accuracy"]["value"] == max(
        r.latest_metrics["accuracy"] for r in churn_version.run.experiment.runs.all()
    )
    response = api.get(reverse("report", args=["experiments"]), {"format": "csv"})
    assert "monitoring-tests,2,2,0,0,0,accuracy: #" in response.content.decode()

    out = io.StringIO()
    call_command("report", "deployments", "--since", "7d", "--user", "audrey", stdout=out)
    text = out.getvalue()
    assert "deployments report since" in text
    assert "approved_by" in text
    assert "churn  production   canary" in text
    out = io.StringIO()
    call_command("report", "experiments", "--format", "json", "--user", "audrey", stdout=out)
    assert json.loads(out.getvalue())["report"] == "experiments"
    out = io.StringIO()
    call_command("report", "deployments", "--format", "csv", "--since", "2020-01-01", "--user", "audrey", stdout=out)
    assert out.getvalue().splitlines()[0] == ",".join(DEPLOYMENT_COLUMNS)

    client.force_login(auditor)
    page = client.get(reverse("admin:monitoring_report_changelist") + "?since=7d").content.decode()
    assert "Experiment summary" in page
    assert "Deployment report" in page
    assert "monitoring-tests" in page
    assert "/api/v1/reports/deployments?since=7d&format=csv" in page


def test_reports_refuse_and_name_the_field(application, auditor):
    response = _client(application).get(reverse("report", args=["deployments"]))
    assert response.status_code == 403
    assert "may not read the deployment report" in response.json()["error"]
    response = _client(application).get(reverse("report", args=["deployments"]), {"format": "csv"})
    assert response.status_code == 403
    assert response["Content-Type"] == "application/json"
    response = _client(auditor).get(reverse("report", args=["deployments"]), {"since": "last tuesday"})
    assert response.status_code == 400
    assert response.json()["field"] == "since"
    response = _client(auditor).get(reverse("report", args=["budgets"]))
    assert response.status_code == 400
    assert response.json()["field"] == "report"
    with pytest.raises(CommandError, match="may not read the experiment report"):
        call_command("report", "experiments", "--user", "app")
    with pytest.raises(CommandError, match="--user"):
        call_command("report", "experiments", "--user", "")
