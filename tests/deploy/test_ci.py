""".github/workflows/ci.yml against the GitHub workflow schema (check-jsonschema's vendored copy), and what it
runs: .ci/run on PostgreSQL and Redis service containers, then the image build."""

import pytest

from tests.deploy.conftest import ROOT, load_yaml
from tests.deploy.test_compose import check_jsonschema

WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


@pytest.fixture(scope="module")
def workflow():
    workflow = load_yaml(WORKFLOW)
    workflow["on"] = workflow.pop(True)  # PyYAML reads YAML 1.1, where `on` is true
    return workflow


def test_the_workflow_follows_the_github_schema(tmp_path):
    status, output = check_jsonschema("github-workflows", WORKFLOW.read_text(), tmp_path)
    assert status == 0, output


def test_the_schema_check_can_fail(tmp_path):
    broken = WORKFLOW.read_text().replace(
        "    runs-on: ubuntu-24.04\n    timeout-minutes: 45", "    timeout-minutes: 45"
    )
    status, output = check_jsonschema("github-workflows", broken, tmp_path)
    assert status == 1
    assert "runs-on" in output


def test_it_runs_what_ci_run_runs_on_postgresql_and_redis(workflow):
    test = workflow["jobs"]["test"]
    assert {"postgres", "redis"} <= set(test["services"])
    assert test["env"]["DATABASE_URL"].startswith("postgres://")
    assert test["env"]["CELERY_BROKER_URL"].startswith("redis://")
    assert any(step.get("run") == ".ci/run" for step in test["steps"])
    ci_run = (ROOT / ".ci" / "run").read_text()
    assert "make lint" in ci_run
    assert "make test" in ci_run
    # The ports the service containers publish are the ones the URLs name.
    assert "5432:5432" in test["services"]["postgres"]["ports"]
    assert "6379:6379" in test["services"]["redis"]["ports"]


def test_it_builds_the_image_after_the_tests(workflow):
    image = workflow["jobs"]["image"]
    assert image["needs"] == "test"
    build = next(step for step in image["steps"] if step.get("uses", "").startswith("docker/build-push-action"))
    assert build["with"]["context"] == "."
