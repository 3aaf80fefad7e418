"""Schemathesis against the app's own OpenAPI schema (drf-spectacular), with a token: any 5xx, or an
answer the schema does not describe (an undocumented status, a body of the wrong shape), fails.

Bounded for the suite: FUZZ_EXAMPLES cases per operation (default 4, a few hundred in all). `make fuzz`
runs many more."""

import os

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "4"))
# A 5xx, a status the operation does not document, a body or headers or content type other than documented.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


@pytest.fixture
def in_process_wsgi():
    """The application the web server runs (predictions below Django in front of Django's handler). Django's
    handler closes the database connection after each request, as a real server does; here that connection
    holds the test's transaction, so (as Django's test client does) it is left open."""
    from serving.fast import FastPredictions

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield FastPredictions(WSGIHandler())
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def api_schema(django_user_model, serving, production, settings, in_process_wsgi):
    settings.ALLOWED_HOSTS = ["*"]
    settings.SERVING_DEFAULT_MODEL = production.model.name  # /predict and /health answer for it
    admin = django_user_model.objects.create_superuser("fuzz", password="pw-fuzz-1")
    token = Token.objects.create(user=admin).key
    schema = schemathesis.openapi.from_wsgi(
        "/api/schema/?format=json", in_process_wsgi, headers={"Authorization": f"Token {token}"}
    )
    schema.token = token
    return schema


def _fuzz(operation, token, mode, calls):
    """Run up to EXAMPLES cases of one operation; the failures' messages."""
    failures = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    def run(case):
        calls.append(operation.label)
        try:
            case.call_and_validate(headers={"Authorization": f"Token {token}"}, checks=CHECKS)
        except (AssertionError, FailureGroup) as exc:  # keep going with the next case
            failures.append(f"{operation.label} [{mode.value}]: {str(exc)[:1500]}")

    try:
        run()
    except Unsatisfiable:  # nothing of this operation can be made invalid (no parameters, no body)
        assert mode is GenerationMode.NEGATIVE, operation.label
    return failures


@pytest.mark.django_db
def test_api_answers_as_its_schema_says(api_schema):
    failures, calls = [], []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failures += _fuzz(operation, api_schema.token, mode, calls)
    assert not failures, "\n\n".join(failures[:30])
    operations = len(set(calls))
    assert operations >= 50, operations
    assert len(calls) >= operations * EXAMPLES, (operations, len(calls))
    print(f"schemathesis: {len(calls)} cases on {operations} operations, no failure")


@pytest.mark.django_db
def test_prediction_bodies_the_schema_accepts_are_the_ones_the_api_reads(client):
    """An empty body is refused by the API, so the schema refuses it too (schemathesis found `{}` valid by
    the schema and answered 400); each documented form is valid."""
    import jsonschema

    paths = client.get("/api/schema/?format=json").json()["paths"]

    def body_schema(path):
        return paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]

    def valid(schema, body):
        return jsonschema.Draft202012Validator(schema).is_valid(body)

    predict = body_schema("/api/v1/models/{name}/predict")
    assert not valid(predict, {})
    assert not valid(predict, {"instances": []})
    assert valid(predict, {"instances": [{"petal_length_cm": 1.4}]})
    assert valid(predict, {"inputs": [[1.4, 0.2]]})

    invocations = body_schema("/api/v1/models/{name}/invocations")
    assert not valid(invocations, {})
    assert not valid(invocations, {"instances": [[1.4]], "inputs": [[1.4]]})  # exactly one format
    assert valid(invocations, {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]]}})
    assert valid(invocations, {"dataframe_records": [{"a": 1}]})
    assert valid(invocations, {"instances": [[1, 2]]})
    assert valid(invocations, {"inputs": {"a": [1]}})
