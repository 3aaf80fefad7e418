"""The project frame: settings from the environment, errors as JSON under /api/."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from mlops_site.env import env


def test_env_reads_types_and_fails_loudly_on_a_missing_required_value(monkeypatch):
    monkeypatch.setenv("MLOPS_TEST_FLAG", "off")
    monkeypatch.setenv("MLOPS_TEST_HOSTS", "a.example, b.example,")
    monkeypatch.setenv("MLOPS_TEST_LIMIT", "12")
    assert env("MLOPS_TEST_FLAG", True, cast=bool) is False
    assert env("MLOPS_TEST_HOSTS", [], cast=list) == ["a.example", "b.example"]
    assert env("MLOPS_TEST_LIMIT", 1, cast=int) == 12
    assert env("MLOPS_TEST_UNSET", "fallback") == "fallback"
    with pytest.raises(ImproperlyConfigured, match="MLOPS_TEST_UNSET is required"):
        env("MLOPS_TEST_UNSET")
    monkeypatch.setenv("MLOPS_TEST_FLAG", "perhaps")
    with pytest.raises(ImproperlyConfigured, match="not a boolean"):
        env("MLOPS_TEST_FLAG", cast=bool)
    monkeypatch.setenv("MLOPS_TEST_LIMIT", "twelve")
    with pytest.raises(ImproperlyConfigured, match="MLOPS_TEST_LIMIT"):
        env("MLOPS_TEST_LIMIT", cast=int)


@pytest.mark.django_db
def test_unknown_api_url_is_a_json_404(client):
    response = client.get("/api/v1/runs/not-a-number")
    assert response.status_code == 404
    assert response.json() == {"error": "no endpoint at /api/v1/runs/not-a-number"}
    assert client.get("/no-such-page").status_code == 404


@pytest.mark.django_db
def test_root_leads_to_the_admin(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/admin/"


def test_openapi_schema_validates_without_warnings(tmp_path):
    from django.core.management import call_command

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
    schema = (tmp_path / "schema.yaml").read_text()
    for path in ("/api/v1/models/{name}/predict:", "/api/v1/models/{name}/invocations:", "/v2/models/{name}/infer:"):
        assert path in schema


def test_every_api_operation_is_tagged_with_its_area_and_every_area_is_described():
    from drf_spectacular.generators import SchemaGenerator

    from core.openapi import AREAS

    schema = SchemaGenerator().get_schema(request=None, public=True)
    described = {tag["name"]: tag["description"] for tag in schema["tags"]}
    assert list(described) == list(AREAS)
    assert all(len(description) > 30 for description in described.values())
    tagged = {}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert len(operation["tags"]) == 1, (method, path)
            tagged.setdefault(operation["tags"][0], set()).add(path)
    assert set(tagged) == set(AREAS)
    assert "/api/v1/runs" in tagged["experiments"]
    assert "/api/v1/promotion-requests/{request_id}/approve" in tagged["registry"]
    assert "/v2/models/{name}/infer" in tagged["serving"]
    assert "/api/v1/audit-log" in tagged["governance"]
    assert "/api/v1/crm/refreshes" in tagged["crm"]
