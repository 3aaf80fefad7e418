"""Shared fixtures: each test gets its own artifact store (and MLflow store, if it is about MLflow);
users in each role, and a trained / registered / promoted model for the registry, serving and e2e tests.

Training and the ONNX conversion are deterministic (fixed seeds), so each distinct fit or conversion
runs once per test session and is replayed afterwards: a test still goes through every service, row
and file of the path it checks, only the minutes of scikit-learn and skl2onnx are not paid twice.
"""

import hashlib
import os
import pickle
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest
from django.contrib.auth.models import Group, Permission

from experiments import services as experiment_services
from governance.roles import roles_sync
from registry import services


def _gevent_reinit():
    """tritonclient's HTTP client runs on gevent, whose event loop does not survive a fork: a process
    forked after a test used it (mutmut runs each mutant in a fork of the process that ran the tests
    first) waited forever on its first request. gevent.reinit() makes the loop anew in the child."""
    gevent = sys.modules.get("gevent")
    if gevent is not None:
        gevent.reinit()


os.register_at_fork(after_in_child=_gevent_reinit)


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings):
    """Under `make mutation` (mutmut sets MUTANT_UNDER_TEST and runs mutants side by side in forked
    processes, with --reuse-db), each process works on its own copy of the test database that the first,
    unmutated run migrated, instead of sharing one database or migrating again for every mutant: a copy
    of the SQLite file, or on PostgreSQL a database made from it as a template (dropped at the end)."""
    if not os.environ.get("MUTANT_UNDER_TEST"):
        yield
        return
    from django.conf import settings

    database = settings.DATABASES["default"]
    test = database.setdefault("TEST", {})
    if database["ENGINE"] == "django.db.backends.postgresql":
        # mutmut ends each mutant's process with os._exit: no atexit, so the copy goes at the session's end
        # (a mutant killed for its time leaves its copy to tools/mutation.py, which drops them all after).
        # The template's name, as the first run knew it: mutmut forks each mutant's process from one whose
        # settings already point at that process's own (dropped) copy.
        template = os.environ.setdefault("MUTATION_TEMPLATE_DATABASE", test.get("NAME") or f"test_{database['NAME']}")
        test["NAME"], drop = _postgres_copy(database, template)
        yield
        drop()
        return
    template = test.get("NAME")
    if template and os.path.exists(template):
        import shutil

        own = f"{template}.{os.getpid()}"
        for suffix in ("", "-wal"):
            if os.path.exists(template + suffix):
                shutil.copyfile(template + suffix, own + suffix)
        test["NAME"] = own
    yield


def _postgres_copy(database, template):
    """A copy of the PostgreSQL test database `template` for this process, and the function that drops it."""
    import psycopg2
    from psycopg2 import sql

    own = f"{template}_{os.getpid()}"
    params = {"dbname": "postgres", "user": database["USER"], "host": database["HOST"], "port": database["PORT"]}
    admin = psycopg2.connect(**{k: v for k, v in params.items() if v}, password=database.get("PASSWORD") or None)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [template])
        if cursor.fetchone() is None:
            admin.close()
            return template, lambda: None  # not migrated yet: this run makes it
        # A template cannot be copied while a session is connected to it (the run that made it may still be).
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [template],
        )
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(own)))
        cursor.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(own), sql.Identifier(template)))

    def drop():
        from django.db import connections

        connections.close_all()
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(own)))
        admin.close()

    return own, drop


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """Let the suite flush the test database between transactional tests: on PostgreSQL the audit table
    refuses TRUNCATE, which is how Django flushes. The test of that refusal switches it back on."""
    from django.db import connection

    with django_db_blocker.unblock(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE governance_auditentry DISABLE TRIGGER governance_auditentry_no_truncate")


@pytest.fixture(autouse=True)
def fast_password_hashing(request, settings):
    """A password is hashed in microseconds here, not in the production hasher's deliberate half second
    (the real processes the end-to-end tests start check passwords with the production hasher)."""
    if not request.node.nodeid.startswith("tests/e2e/"):
        settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def in_memory_broker(request):
    """Unit tests never publish to the machine's broker: what they queue goes to kombu's in-memory transport.
    The end-to-end tests, whose real workers must receive it, keep the configured broker."""
    from mlops_site.celery import app

    if request.node.nodeid.startswith("tests/e2e/") or request.node.get_closest_marker("worker"):
        yield
        return
    keys = ("broker_url", "broker_read_url", "broker_write_url")
    configured = {key: app.conf[key] for key in keys}
    app.conf.update(dict.fromkeys(keys, "memory://"))
    app._after_fork()  # drops the pooled connections, so the next message goes to the new broker
    yield
    app.conf.update(configured)
    app._after_fork()


_FITS = {}
_CONVERSIONS = {}


@pytest.fixture(autouse=True)
def fit_once_per_session(monkeypatch):
    """Replay a fit already made in this session (same data, algorithm and params): its model, metrics,
    artifacts and the history and progress it reported, through the same callbacks."""
    from experiments import trainers

    real = trainers.train

    def train(frame, *, target, algorithm, params, on_progress=trainers._no_progress, on_history=trainers._no_history):
        key = (
            int(pd.util.hash_pandas_object(frame, index=True).sum()),
            target,
            algorithm,
            repr(sorted(params.items())),
        )
        if key not in _FITS:
            calls = []
            result = real(
                frame,
                target=target,
                algorithm=algorithm,
                params=params,
                on_progress=lambda *args: (calls.append(("progress", args)), on_progress(*args)),
                on_history=lambda *args: (calls.append(("history", args)), on_history(*args)),
            )
            _FITS[key] = (result, calls)
            return result
        result, calls = _FITS[key]
        for kind, args in calls:
            (on_progress if kind == "progress" else on_history)(*args)
        return result

    monkeypatch.setattr(trainers, "train", train)


@pytest.fixture(autouse=True)
def convert_once_per_session(monkeypatch):
    """The ONNX form of a pipeline already converted in this session, at the same tolerance (not under the
    mutation run of the converter itself, whose edits a replayed conversion would hide)."""
    from registry.services import registration

    if os.environ.get("MUTATION_REAL_CONVERSIONS"):
        return

    real = registration.onnx_convert

    def onnx_convert(*, pipeline, features, frame, tolerance):
        key = (hashlib.sha256(pickle.dumps(pipeline)).hexdigest(), repr(features), tolerance, len(frame))
        if key not in _CONVERSIONS:
            _CONVERSIONS[key] = real(pipeline=pipeline, features=features, frame=frame, tolerance=tolerance)
        return _CONVERSIONS[key]

    monkeypatch.setattr(registration, "onnx_convert", onnx_convert)


@pytest.fixture
def serving(settings, tmp_path, monkeypatch):
    """A serving process as freshly started: an empty in-memory runtime, its own change signal, and the
    prediction log written at once."""
    from serving.runtime import ServingRuntime

    settings.PREDICTION_LOG_SYNC = True
    settings.SERVING_SIGNAL_FILE = str(tmp_path / "serving-generation")
    fresh = ServingRuntime()
    for module in ("serving.runtime", "serving.predict", "serving.api", "serving.v2", "serving.fast"):
        monkeypatch.setattr(f"{module}.runtime", fresh)
    return fresh


@pytest.fixture
def mlflow_store(tmp_path):
    """A fresh MLflow store for one test: what it finds there, it put there."""
    root = tmp_path / "mlflow"
    root.mkdir()
    return {"uri": f"sqlite:///{root / 'mlflow.db'}", "artifacts": (root / "artifacts").as_uri()}


# MLflow is reached only by the tests marked @pytest.mark.mlflow; elsewhere a run is not mirrored, and an
# unmarked test that reaches MLflow anyway meets nothing listening.
_NO_MLFLOW = "http://127.0.0.1:9"


@pytest.fixture(autouse=True)
def isolated_stores(request, settings, tmp_path):
    """Each test gets its own artifact store, and its own MLflow store if it is about MLflow."""
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    # The prediction log's spill too: a batch one test (or a server it started) spilled is never replayed
    # into another test's database.
    settings.PREDICTION_LOG_SPILL_DIR = str(tmp_path / "predlog-spill")
    settings.MLFLOW_MIRROR_ENABLED = request.node.get_closest_marker("mlflow") is not None
    if settings.MLFLOW_MIRROR_ENABLED:
        store = request.getfixturevalue("mlflow_store")
        settings.MLFLOW_TRACKING_URI, settings.MLFLOW_ARTIFACT_LOCATION = store["uri"], store["artifacts"]
    else:
        settings.MLFLOW_TRACKING_URI, settings.MLFLOW_ARTIFACT_LOCATION = _NO_MLFLOW, ""
    return settings


@pytest.fixture
def user(django_user_model):
    """A data scientist (the role that launches runs and uploads data), as the API tests act."""
    return _member(django_user_model, "scientist", "Data scientist", is_staff=False)


@pytest.fixture
def api_client(user):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(user)
    return client


SMALL_RUN = {"experiment": "registry-tests", "dataset": "iris", "algorithm": "random_forest"}


def _member(django_user_model, username, *roles, is_staff=True):
    if Group.objects.filter(name__in=roles).count() < len(roles):
        # A transactional test flushes every table, the roles a migration made included: bring them back.
        roles_sync()
    user = django_user_model.objects.create_user(username, password=f"pw-{username}-1", is_staff=is_staff)
    user.groups.add(*Group.objects.filter(name__in=roles))
    return user


@pytest.fixture
def scientist(django_user_model):
    return _member(django_user_model, "dana", "Data scientist")


@pytest.fixture
def approver(django_user_model):
    return _member(django_user_model, "alex", "Approver")


@pytest.fixture
def second_approver(django_user_model):
    return _member(django_user_model, "blair", "Approver")


@pytest.fixture
def auditor(django_user_model):
    return _member(django_user_model, "audrey", "Auditor")


@pytest.fixture
def engineer(django_user_model):
    return _member(django_user_model, "eli", "ML engineer")


@pytest.fixture
def application(django_user_model):
    """The account an application's backend calls the prediction API with."""
    return _member(django_user_model, "app", "Application", is_staff=False)


@pytest.fixture
def overrider(django_user_model):
    user = _member(django_user_model, "olive", "Approver")
    user.user_permissions.add(Permission.objects.get(codename="override_compliance"))
    return user


@pytest.fixture
def train(scientist):
    """A finished run trained in this process (tiny forest on iris), launched by the data scientist."""

    def _train(n_estimators=5, **kwargs):
        return experiment_services.run_launch(
            **{**SMALL_RUN, "params": {"n_estimators": n_estimators}, "inline": True, "by": scientist, **kwargs}
        )

    return _train


@pytest.fixture
def register(train, scientist):
    def _register(name="iris-clf", run=None, **kwargs):
        run = run or train()
        return services.model_version_register(run_id=run.pk, model_name=name, by=scientist, **kwargs)

    return _register


@pytest.fixture
def promote(scientist, approver):
    """Request and approve a move of `version` to `to_stage` (two different people)."""

    def _promote(version, to_stage="production", reason="ship it", **approve_kwargs):
        request = services.promotion_request_create(version=version, to_stage=to_stage, reason=reason, by=scientist)
        services.promotion_request_approve(request_id=request.pk, by=approver, **approve_kwargs)
        version.refresh_from_db()
        return request

    return _promote


@pytest.fixture
def production(register, promote, django_capture_on_commit_callbacks):
    """iris-clf v1 in Production (its deployment made by the promotion), the change signal sent."""
    with django_capture_on_commit_callbacks(execute=True):
        version = register()
        promote(version)
    return version


@pytest.fixture
def put_on_traffic(engineer, approver):
    """Request a canary or shadow of `version` (the ML engineer) and approve it (the approver): the only way
    a version takes traffic beside the primary."""

    def _put(version, mode="canary", percent=None, environment="production", reason="try it"):
        request = services.traffic_request_create(
            version=version, mode=mode, environment=environment, traffic_percent=percent, reason=reason, by=engineer
        )
        return services.promotion_request_approve(request_id=request.pk, by=approver)

    return _put


@pytest.fixture
def receiver():
    """An HTTP server that records each POST; `fail_first` answers that many requests with 503, then `status`
    with `body` (200 "thanks" unless a test sets them), after `delay` seconds."""
    received = []
    state = {"fail_first": 0, "status": 200, "body": b"thanks", "delay": 0}  # each request recorded with its time

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "headers": dict(self.headers),
                    "body": body,
                    "at": time.monotonic(),
                }
            )
            time.sleep(state["delay"])
            failing = state["fail_first"] > 0
            state["fail_first"] -= 1
            self.send_response(503 if failing else state["status"])
            self.end_headers()
            self.wfile.write(b"busy" if failing else state["body"])

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"url": f"http://127.0.0.1:{server.server_port}/hook", "received": received, "state": state}
    server.shutdown()
