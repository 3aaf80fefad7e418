"""The CLI: traffic through the real API, the jobs run now, drift of a model and of two datasets."""

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from monitoring.models import DriftReference, MonitoringJob
from registry.models import ModelVersion


def _call(*args):
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_shifted_traffic_through_the_api_is_flagged_by_the_cli(churn_version, promote, live_server, scientist):
    promote(churn_version)
    # Registered before monitoring's task could run here: the backfill builds its reference.
    assert not DriftReference.objects.exists()
    assert "1 reference(s) built" in _call("monitor", "references")

    out = _call(
        "simulate_traffic",
        "churn",
        "--shift",
        "monthly_charges=+30",
        "--rows",
        "300",
        "--url",
        live_server.url,
        "--user",
        scientist.username,
        "--feedback",
        "0.2",
    )
    assert "300 rows predicted by churn v1" in out
    assert "feedback sent for" in out

    out = _call("monitor", "run", "--model", "churn")
    assert "churn: hourly aggregates and sketches:" in out
    assert MonitoringJob.objects.get(job="drift", model_name="churn").status == MonitoringJob.Status.OK

    payload = json.loads(_call("monitor", "drift", "churn", "--window", "24h", "--json"))
    assert payload["rows"] == 300
    flagged = {f["feature"] for f in payload["features"] if f["drifted"]}
    assert "monthly_charges" in flagged
    assert "tenure_months" not in flagged
    table = _call("monitor", "drift", "churn", "--latest")
    assert "monthly_charges" in table
    assert "DRIFT" in table

    out = _call("monitor", "aggregates", "churn")
    assert "primary" in out
    assert "labelled; accuracy" in out


@pytest.mark.django_db
def test_drift_between_datasets_prints_the_issues_json():
    out = _call("drift", "--reference", "iris", "--current", "iris", "--json")
    payload = json.loads(out)
    assert set(payload) == {"dataset_drift", "share_drifted", "features"}
    assert set(payload["features"][0]) == {
        "feature",
        "method",
        "score",
        "threshold",
        "drifted",
        "reference_rows",
        "current_rows",
    }
    assert payload["features"][0]["method"] == "ks"  # 150 reference rows, many values: Evidently picks KS
    with pytest.raises(CommandError, match="unknown dataset 'nope'"):
        _call("drift", "--reference", "nope", "--current", "iris")


@pytest.mark.django_db
def test_drift_of_two_churn_samples_flags_nothing_but_a_moved_column(tmp_path, scientist):
    from experiments.datasets import make_customer_churn
    from experiments.services import dataset_version_upload

    base = make_customer_churn(n_samples=1500, seed=1)
    moved = make_customer_churn(n_samples=1500, seed=2)
    moved["monthly_charges"] = moved["monthly_charges"] * 1.4
    dataset_version_upload(name="june", content=base.to_csv(index=False).encode(), target="churned", by=scientist)
    july = dataset_version_upload(
        name="july", content=moved.to_csv(index=False).encode(), target="churned", by=scientist
    )[0]

    payload = json.loads(_call("drift", "--reference", "june", "--current", f"july@{july.sha256[:10]}", "--json"))

    verdicts = {f["feature"]: f for f in payload["features"]}
    assert "churned" not in verdicts
    assert verdicts["monthly_charges"]["drifted"] is True
    assert verdicts["monthly_charges"]["method"] == "wasserstein"  # reference over 1,000 rows
    assert verdicts["contract_type"]["method"] == "jensenshannon"
    assert payload["dataset_drift"] is False


@pytest.mark.django_db
def test_a_model_without_reference_fails_the_cli_with_the_fix(churn_version):
    with pytest.raises(CommandError, match="manage.py monitor references --model churn"):
        _call("monitor", "drift", "churn")
    assert ModelVersion.objects.count() == 1
