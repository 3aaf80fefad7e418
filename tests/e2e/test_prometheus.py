"""A real Prometheus (Debian's `prometheus` package) with deploy/prometheus's rules scrapes a running web
server of ours: the target is up, the prediction and monitoring series arrive, every rule evaluates without
error and every expression of the Grafana dashboard is valid PromQL."""

import datetime as dt
import json
import shutil
import subprocess
import urllib.parse
import urllib.request

import pytest
import yaml
from django.utils import timezone

from monitoring.models import DriftResult, DriftRun
from tests.deploy.conftest import DEPLOY
from tests.deploy.test_prometheus import dashboard_expressions
from tests.e2e import processes
from tests.e2e.test_processes import _free_port, _status
from tests.serving.conftest import IRIS_ROW

prometheus_binary = shutil.which("prometheus")
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        prometheus_binary is None, reason="prometheus not installed (Debian: apt-get install prometheus)"
    ),
]


def _config(tmp_path, web_port):
    """deploy/prometheus/prometheus.yml with its job names and rules, scraping our server every second."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(DEPLOY / "prometheus" / "rules" / "*.yml")]
    web = next(job for job in config["scrape_configs"] if job["job_name"] == "mlops-web")
    del web["dns_sd_configs"]
    web["static_configs"] = [{"targets": [f"127.0.0.1:{web_port}"]}]
    config["scrape_configs"] = [web]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def _api(base, path, **params):
    url = f"{base}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        return json.loads(error.read())


@pytest.fixture
def web(tmp_path, register, promote, django_capture_on_commit_callbacks, settings):
    signal_file = tmp_path / "signal"
    settings.SERVING_SIGNAL_FILE = str(signal_file)
    with django_capture_on_commit_callbacks(execute=True):
        promote(register())
    now = timezone.now()
    run = DriftRun.objects.create(
        model_name="iris-clf",
        version=1,
        window="24h",
        window_start=now - dt.timedelta(days=1),
        window_end=now,
        status=DriftRun.Status.OK,
        dataset_drift=True,
        share_drifted=0.25,
    )
    DriftResult.objects.create(
        run=run, name="petal width (cm)", method="ks", score=0.01, threshold=0.05, drifted=True, verdict=True
    )
    port = _free_port()
    process = processes.start_web(
        tmp_path,
        port=port,
        SERVING_REQUIRE_AUTH="0",
        SERVING_DEFAULT_MODEL="iris-clf",
        SERVING_SIGNAL_FILE=str(signal_file),
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        processes.wait_for(lambda: _status(f"{base}/health") == 200, timeout=120, process=process, what="the server")
        yield base, port
    finally:
        processes.stop(process)


@pytest.fixture
def prometheus(tmp_path, web):
    _base, web_port = web
    port = _free_port()
    log = tmp_path / "prometheus.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                prometheus_binary,
                f"--config.file={_config(tmp_path, web_port)}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    process.log = log
    base = f"http://127.0.0.1:{port}"
    try:
        processes.wait_for(lambda: _status(f"{base}/-/ready") == 200, timeout=30, process=process, what="prometheus")
        yield base, process
    finally:
        processes.stop(process)


def _predict(base):
    request = urllib.request.Request(
        f"{base}/api/v1/models/iris-clf/predict",
        data=json.dumps({"instances": [IRIS_ROW]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def _query(base, expression):
    answer = _api(base, "query", query=expression)
    assert answer["status"] == "success", (expression, answer)
    return answer["data"]["result"]


def test_prometheus_scrapes_the_server_and_every_rule_and_panel_evaluates(web, prometheus):
    web_base, _ = web
    base, process = prometheus
    for _ in range(20):
        _predict(web_base)

    def scraped():
        return _query(base, 'prediction_requests_total{job="mlops-web",model="iris-clf",status="200"}')

    processes.wait_for(scraped, timeout=30, process=process, what="the prediction counter scraped")
    targets = _api(base, "targets")["data"]["activeTargets"]
    assert [(t["labels"]["job"], t["health"]) for t in targets] == [("mlops-web", "up")], targets
    drift = _query(base, 'mlops_dataset_drift{model="iris-clf",model_version="1"}')
    assert [float(sample["value"][1]) for sample in drift] == [1.0]
    score = _query(base, 'mlops_drift_score{feature="petal width (cm)"}')
    assert float(score[0]["value"][1]) == 0.01

    for _ in range(20):  # more traffic after the first scrape, so that the 5-minute rate has an increase
        _predict(web_base)

    def rate_recorded():
        return _query(base, 'model_version:prediction_requests:rate5m{model="iris-clf"} > 0')

    processes.wait_for(rate_recorded, timeout=30, process=process, what="the recording rule's rate")

    def rules_evaluated():
        groups = _api(base, "rules")["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return rules if all(rule.get("lastEvaluation", "").startswith("2") for rule in rules) else None

    rules = processes.wait_for(rules_evaluated, timeout=30, process=process, what="every rule evaluated")
    assert len(rules) == 13
    assert [rule["name"] for rule in rules if rule["health"] != "ok"] == [], rules
    # The drift row is there: its alert is pending (it must hold 15 minutes before it fires).
    alerts = {rule["name"]: rule for rule in rules if rule["type"] == "alerting"}
    assert alerts["DataDriftDetected"]["state"] == "pending"
    assert alerts["PredictionErrorRateHigh"]["state"] == "inactive"

    for expression in dashboard_expressions():
        panel_query = expression.replace("$model", ".*").replace("$__rate_interval", "1m").replace("$__range", "5m")
        _query(base, panel_query)
