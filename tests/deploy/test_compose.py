"""docker-compose.yml against the Compose specification (check-jsonschema's vendored schema), what it must
run (two web replicas behind nginx, one beat, workers per queue group, Prometheus and Grafana provisioned
from deploy/, a healthcheck on every long-running service), and the Dockerfile it builds."""

import json
import re
import subprocess
import sys

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, ROOT, load_yaml, procfile_queues

COMPOSE = ROOT / "docker-compose.yml"


def check_jsonschema(schema, document, tmp_path):
    """Run check-jsonschema with one of its vendored schemas (Compose, GitHub workflows) on a YAML document;
    returns (exit status, output). Its own YAML loader (1.2: `on:` stays a string) and validator."""
    path = tmp_path / "document.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False) if not isinstance(document, str) else document)
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", f"vendor.{schema}", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode, result.stdout + result.stderr


@pytest.fixture(scope="module")
def compose():
    return load_yaml(COMPOSE)


def test_compose_file_follows_the_compose_specification(tmp_path):
    status, output = check_jsonschema("compose-spec", COMPOSE.read_text(), tmp_path)
    assert status == 0, output


def test_compose_schema_check_can_fail(compose, tmp_path):
    web = {**compose["services"]["web"], "replica": 2}  # a misspelt key
    status, output = check_jsonschema(
        "compose-spec", {**compose, "services": {**compose["services"], "web": web}}, tmp_path
    )
    assert status == 1
    assert "replica" in output


def test_web_replicas_sit_behind_the_buffering_proxy_and_share_artifacts_and_signal(compose):
    services = compose["services"]
    web = services["web"]
    assert web["deploy"]["replicas"] == 2
    assert "ports" not in web  # only through nginx
    assert "artifacts:/srv/mlops/artifacts" in web["volumes"]
    assert web["environment"]["SERVING_SIGNAL_FILE"].startswith("/srv/mlops/artifacts/")
    proxy = services["proxy"]
    assert proxy["image"].startswith("nginx:")
    assert proxy["ports"] == ["8000:80"]
    mount = next(v for v in proxy["volumes"] if v.endswith(":/etc/nginx/nginx.conf:ro"))
    nginx = (ROOT / mount.split(":")[0]).read_text()
    assert re.search(r"server web:8000 resolve;", nginx)
    assert "proxy_request_buffering on;" in nginx
    assert "proxy_buffering on;" in nginx
    for name in ("worker", "worker-training", "beat", "migrate"):
        assert "artifacts:/srv/mlops/artifacts" in services[name]["volumes"], name


def test_one_beat_and_workers_per_queue_group(compose):
    services = compose["services"]
    assert services["beat"]["deploy"]["replicas"] == 1
    beats = [name for name, s in services.items() if "beat" in str(s.get("command", ""))]
    assert beats == ["beat"]
    queues = {}
    for name, service in services.items():
        match = re.search(r"celery -A mlops_site worker --queues (\S+)", str(service.get("command", "")))
        if match:
            queues[name] = set(match.group(1).split(","))
    assert set().union(*queues.values()) >= procfile_queues() | {"training", "default", "monitoring"}
    assert sum(len(q) for q in queues.values()) == len(set().union(*queues.values()))  # each by one group


def test_every_long_running_service_has_a_healthcheck(compose):
    for name, service in compose["services"].items():
        if service.get("restart") == "no":
            continue
        if name == "beat":  # nothing to ask it: its schedule is in the database, a restart policy covers it
            continue
        assert "healthcheck" in service, name


def test_prometheus_and_grafana_are_provisioned_from_deploy(compose):
    services = compose["services"]
    prometheus_mounts = {v.split(":")[1]: v.split(":")[0] for v in services["prometheus"]["volumes"]}
    assert prometheus_mounts["/etc/prometheus"] == "./deploy/prometheus"
    grafana_mounts = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"]}
    assert grafana_mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    assert grafana_mounts["/var/lib/grafana/dashboards"] == "./deploy/grafana/dashboards"
    assert services["grafana"]["environment"]["PROMETHEUS_URL"] == "http://prometheus:9090"
    for source in (*prometheus_mounts.values(), *grafana_mounts.values()):
        if source.startswith("./"):
            assert (ROOT / source).is_dir(), source
    # Prometheus finds every replica and worker by the services' names.
    config = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    names = {name for job in config["scrape_configs"] for sd in job.get("dns_sd_configs", []) for name in sd["names"]}
    assert names == {"web", "worker", "worker-training"} <= set(services)
    for name in ("worker", "worker-training"):
        assert services[name]["environment"]["WORKER_METRICS_PORT"] == "9808"


def _dockerfile():
    """The Dockerfile's instructions as (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [tuple(line.split(None, 1)) for line in lines]


def test_the_image_runs_as_a_non_root_user_on_port_8000():
    instructions = _dockerfile()
    users = [args for instruction, args in instructions if instruction == "USER"]
    assert users
    assert users[-1] not in ("root", "0")
    user_index = max(i for i, (instruction, _) in enumerate(instructions) if instruction == "USER")
    assert user_index > max(i for i, (instruction, _) in enumerate(instructions) if instruction == "RUN")
    exposed = {port for instruction, args in instructions if instruction == "EXPOSE" for port in args.split()}
    assert {"8000", "9808"} <= exposed
    commands = [json.loads(args) for instruction, args in instructions if instruction == "CMD"]
    assert commands[-1] == ["python", "serve.py"]
    assert not [args for instruction, args in instructions if instruction == "ENTRYPOINT"]
    assert (ROOT / "serve.py").exists()
    assert re.search(r"^FROM python:3\.11", (ROOT / "Dockerfile").read_text(), re.M)
