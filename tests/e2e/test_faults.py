"""Faults on this machine's real services: a private PostgreSQL instance (the machine's own binaries, on
another port) restarted under load while the production web server (serve.py) answers predictions.

Each test stays under 30 s: the outage is 5 s, the instance is made with fsync off."""

import glob
import json
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from tests.e2e import processes
from tests.e2e.test_processes import _free_port
from tests.serving.conftest import IRIS_ROW

pytestmark = pytest.mark.django_db(transaction=True)


def _pg_bin(name):
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.skip("no PostgreSQL binaries on this machine")
    return found[-1]


class PrivatePostgres:
    """A throwaway PostgreSQL cluster in a temporary directory, run as the `postgres` user when we are root."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="pg-fault-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if shutil.which("runuser") and _root() else []
        if self.as_user:
            shutil.chown(self.root, "postgres")
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        self.start()

    def _run(self, *args):
        subprocess.run([*self.as_user, *args], check=True, capture_output=True, timeout=60)

    def start(self):
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")

    def stop(self):
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def psql(self, sql, database="postgres"):
        return subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database, "-tAc", sql],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()

    def copy_of_the_test_database(self, name="faults"):
        """The test database (its schema and what the test committed) copied in; returns its DATABASE_URL."""
        self.psql(f"CREATE DATABASE {name}")
        db = connection.settings_dict
        dump = subprocess.run(
            ["pg_dump", "--no-owner", "--no-privileges", "-h", db["HOST"] or "127.0.0.1", "-p", str(db["PORT"] or 5432),
             "-U", db["USER"], db["NAME"]],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        subprocess.run(
            ["psql", "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", name],
            input=dump.stdout, check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def remove(self):
        subprocess.run([*self.as_user, _pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=30)  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)


def _root():
    import os

    return os.geteuid() == 0


@pytest.fixture
def private_postgres():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (DATABASE_URL)")
    instance = PrivatePostgres()
    yield instance
    instance.remove()


def _call(url, *, token=None, body=None, timeout=5):
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    if token:
        request.add_header("Authorization", f"Token {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (ConnectionError, urllib.error.URLError, TimeoutError):
        return None, None


def test_a_postgresql_restart_under_load_loses_no_logged_prediction_and_answers_503_not_500(
    private_postgres, production, scientist, tmp_path, settings
):
    token = Token.objects.create(user=scientist).key
    database_url = private_postgres.copy_of_the_test_database()
    signal_file = tmp_path / "signal"
    port = _free_port()
    web = processes.start_web(
        tmp_path,
        port=port,
        DATABASE_URL=database_url,
        SERVING_DEFAULT_MODEL="iris-clf",
        SERVING_SIGNAL_FILE=str(signal_file),
        PREDICTION_LOG_FLUSH_SECONDS="0.2",
        PREDICTION_LOG_SPILL_DIR=str(tmp_path / "spill"),
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        processes.wait_for(lambda: _call(f"{base}/health")[0] == 200, timeout=60, process=web, what="the server")
        answered, other = [], []  # (when, status, request id) of predictions; (when, status) of DB-backed reads
        stop = threading.Event()
        body = json.dumps({"instances": [IRIS_ROW]}).encode()

        def predictions():
            while not stop.is_set():
                status, answer = _call(f"{base}/api/v1/models/iris-clf/predict", token=token, body=body)
                answered.append((time.monotonic(), status, answer["request_id"] if status == 200 else None))

        def reads():
            while not stop.is_set():
                other.append((time.monotonic(), _call(f"{base}/api/v1/models", token=token)[0]))
                time.sleep(0.05)

        threads = [threading.Thread(target=predictions) for _ in range(3)] + [threading.Thread(target=reads)]
        for thread in threads:
            thread.start()
        time.sleep(2)
        down_at = time.monotonic()
        private_postgres.stop()
        time.sleep(5)
        private_postgres.start()
        up_at = time.monotonic()
        time.sleep(3)
        stop.set()
        for thread in threads:
            thread.join(timeout=10)

        ok = {request_id for _, status, request_id in answered if status == 200}
        during = [status for when, status, _ in answered if down_at <= when <= up_at]
        assert 200 in during, "predictions should keep answering while the database is down"
        statuses = {status for _, status in other} | {status for _, status, _ in answered}
        assert 500 not in statuses, statuses
        assert 503 in {status for when, status in other if down_at <= when <= up_at}
        after = [status for when, status in other if when > up_at + 1.5]
        assert after, "no read after the database came back"
        assert set(after) == {200}, after  # recovered without a restart of the web server

        def logged():
            ids = private_postgres.psql(
                "SELECT DISTINCT request_id FROM serving_predictionlog WHERE model_name = 'iris-clf'", "faults"
            )
            return ok <= set(ids.split())

        processes.wait_for(logged, timeout=10, process=web, what="every answered prediction in the log")
        assert not list((tmp_path / "spill").glob("*.spill")), "spilled batches should have been replayed"
        metrics = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
        spilled = sum(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("prediction_log_rows_spilled_total")
        )
        replayed = sum(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("prediction_log_rows_replayed_total")
        )
        lost = sum(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("prediction_log_rows_lost_total")
        )
        print(
            f"\nPostgreSQL down {up_at - down_at:.1f} s: {len(ok)} predictions answered 200 "
            f"({sum(1 for s in during if s == 200)} during the outage), all {len(ok)} in the log; "
            f"rows spilled {spilled:.0f}, replayed {replayed:.0f}, lost {lost:.0f}; "
            f"reads during: {sorted({s for w, s in other if down_at <= w <= up_at}, key=str)}; "
            f"first 200 read after restart: "
            f"{min((w for w, s in other if w > up_at and s == 200), default=float('nan')) - up_at:.2f} s"
        )
        assert spilled > 0
        assert replayed == spilled
        assert lost == 0
    finally:
        if web.poll() is None:
            processes.stop(web)


class PrivateRedis:
    """A throwaway redis-server on another port (no persistence), stopped and started by the test."""

    def __init__(self, root):
        if not shutil.which("redis-server"):
            pytest.skip("no redis-server on this machine")
        self.root, self.port, self.process = root, _free_port(), None
        self.start()

    def start(self):
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.root)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while (
            subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True).stdout.strip() != b"PONG"
        ):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.1)

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"


@pytest.fixture
def private_redis(tmp_path):
    instance = PrivateRedis(tmp_path)
    yield instance
    if instance.process.poll() is None:
        instance.stop()


def test_redis_down_predictions_answer_launches_are_503_and_the_worker_picks_up_when_it_returns(
    private_redis, production, scientist, tmp_path
):
    from experiments.models import Run

    token = Token.objects.create(user=scientist).key
    port = _free_port()
    broker = {"CELERY_BROKER_URL": private_redis.url, "CACHE_URL": private_redis.url}
    web = processes.start_web(
        tmp_path, port=port, SERVING_SIGNAL_FILE=str(tmp_path / "signal"), PREDICTION_LOG_FLUSH_SECONDS="0.2", **broker
    )
    worker = processes.start(
        "celery", "-A", "mlops_site", "worker", "--queues", "training,default", "--concurrency", "1",
        "--pool", "solo", "--without-gossip", "--without-mingle", "--hostname", f"faults-{port}@%h",
        log=tmp_path / "worker.log", **broker,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    body = json.dumps({"instances": [IRIS_ROW]}).encode()
    launch = json.dumps({"experiment": "redis-down", "dataset": "iris", "algorithm": "random_forest"}).encode()
    try:
        processes.wait_for(lambda: _call(f"{base}/v2/health/live")[0] == 200, timeout=60, process=web, what="web")
        private_redis.stop()
        down_at = time.monotonic()
        during = [_call(f"{base}/api/v1/models/iris-clf/predict", token=token, body=body)[0] for _ in range(50)]
        assert set(during) == {200}, during  # predictions never touch the broker
        started = time.monotonic()
        status, answer = _call(f"{base}/api/v1/runs", token=token, body=launch, timeout=30)
        refused_in = time.monotonic() - started
        assert status == 503, (status, answer)
        assert b"broker is unreachable" in answer
        refused = Run.objects.get(experiment__name="redis-down")
        assert refused.status == Run.Status.FAILED  # not left QUEUED
        private_redis.start()
        up_at = time.monotonic()
        status, answer = _call(f"{base}/api/v1/runs", token=token, body=launch, timeout=30)
        assert status == 202, (status, answer)
        run_id = answer["id"]

        def finished():
            return Run.objects.get(pk=run_id).status == Run.Status.FINISHED

        processes.wait_for(
            finished, timeout=30, process=worker, what="the worker to train the run after Redis returned"
        )
        print(
            f"\nRedis down {up_at - down_at:.1f} s: 50/50 predictions answered 200, the launch answered 503 "
            f"in {refused_in:.1f} s (run FAILED, not QUEUED); back: the next launch trained "
            f"{time.monotonic() - up_at:.1f} s after Redis"
        )
    finally:
        for process in (web, worker):
            if process.poll() is None:
                processes.stop(process)
