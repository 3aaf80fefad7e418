"""deploy/prometheus and deploy/grafana: the config and rules pass promtool, the rules' unit tests pass, and
every series the rules and the dashboard read is one /metrics exports or a rule records."""

import json
import re
import shutil
import subprocess

import pytest
from prometheus_client.metrics import MetricWrapperBase

from serving import metrics as serving_metrics
from tests.deploy.conftest import DEPLOY, load_yaml

PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
promtool = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    promtool is None, reason="promtool not installed (Debian: apt-get install prometheus)"
)


def _promtool(*args):
    result = subprocess.run([promtool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@needs_promtool
def test_the_config_is_valid_and_loads_the_rules():
    output = _promtool("check", "config", "prometheus.yml")
    assert "1 rule files found" in output


@needs_promtool
def test_the_rules_are_valid():
    assert "13 rules found" in _promtool("check", "rules", "rules/mlops.yml")


@needs_promtool
def test_the_rules_unit_tests_pass():
    assert "SUCCESS" in _promtool("test", "rules", "tests/mlops.test.yml")


def _rules():
    return [rule for group in load_yaml(PROMETHEUS / "rules" / "mlops.yml")["groups"] for rule in group["rules"]]


def dashboard_expressions():
    dashboard = json.loads((GRAFANA / "dashboards" / "mlops.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    expressions += [annotation["expr"] for annotation in dashboard["annotations"]["list"]]
    return expressions


def _exported_names():
    """Series names /metrics exports: the prediction counters and histograms, and the monitoring gauges."""
    from monitoring.metrics import COLLECTOR

    names = set()
    for value in vars(serving_metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.collect():
                names |= {sample.name for sample in family.samples} | {family.name}
                if value._type == "histogram":
                    names |= {f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count"}
                if value._type == "counter":
                    names.add(f"{family.name}_total")
    names |= {family.name for family in COLLECTOR.collect()}  # every family, samples or not
    return names


@pytest.mark.django_db
def test_rules_and_dashboard_read_only_series_that_exist():
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    known = _exported_names() | recorded | {"up", "ALERTS"}
    assert {"mlops_live_accuracy", "mlops_drift_score", "prediction_latency_seconds_bucket"} <= known
    selector = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{|\[)")
    expressions = [rule["expr"] for rule in _rules()] + dashboard_expressions()
    used = {name for expression in expressions for name in selector.findall(expression)}
    assert used, expressions
    assert used <= known, used - known
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    assert {"PredictionLatencyAboveBaseline", "PredictionErrorRateHigh", "DataDriftDetected", "AccuracyDrop"} <= alerts


def test_grafana_is_provisioned_with_the_datasource_the_dashboard_uses():
    datasource = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"][0]
    provider = load_yaml(GRAFANA / "provisioning" / "dashboards" / "mlops.yml")["providers"][0]
    dashboard = json.loads((GRAFANA / "dashboards" / "mlops.json").read_text())
    uids = {panel["datasource"]["uid"] for panel in dashboard["panels"] if panel["type"] != "row"}
    assert uids == {datasource["uid"]}
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    titles = " ".join(panel["title"] for panel in dashboard["panels"]).lower()
    for topic in (
        "predictions",
        "crm segment updates",
        "latency distribution",
        "version share",
        "error rate",
        "drift",
        "accuracy",
    ):
        assert topic in titles, topic
    heatmap = next(panel for panel in dashboard["panels"] if panel["type"] == "heatmap")
    assert "prediction_latency_seconds_bucket" in heatmap["targets"][0]["expr"]
