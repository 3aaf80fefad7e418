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
def test_root_says_where_things_are_and_takes_staff_to_the_admin(client, django_user_model):
    page = client.get("/")
    assert page.status_code == 200
    for link in ('href="/admin/"', 'href="/api/docs/"', 'href="/health"', 'href="/metrics"'):
        assert link in page.content.decode()
    client.force_login(django_user_model.objects.create_user("staff", is_staff=True))
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/admin/"


@pytest.mark.django_db
def test_a_403_is_a_page_with_the_sites_header_and_a_way_back_and_logs_no_traceback(client, scientist, caplog):
    client.force_login(scientist)
    with caplog.at_level("WARNING", logger="django.request"):
        response = client.get("/admin/auth/user/")
    assert response.status_code == 403
    page = response.content.decode()
    assert "MLOps Site" in page
    assert "You may not do this" in page
    assert 'href="/admin/"' in page
    forbidden = [record for record in caplog.records if getattr(record, "status_code", None) == 403]
    assert forbidden
    assert all(record.exc_info is None for record in forbidden)


@pytest.mark.django_db
def test_the_admin_is_named_and_ordered_along_a_models_path(admin_client):
    page = admin_client.get("/admin/").content.decode()
    assert "<title>Overview | MLOps Site</title>" in page
    assert "Django administration" not in page
    apps = ("experiments", "registry", "serving", "monitoring", "governance", "auth")
    order = [page.index(f'class="app-{app} module') for app in apps]
    assert order == sorted(order)


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


def test_the_browsers_own_favicon_request_finds_the_icon(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301
    assert response["Location"].endswith("mlops/favicon.svg")
