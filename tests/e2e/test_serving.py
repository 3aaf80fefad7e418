"""The prediction API under the production web server (serve.py: granian, two worker processes): hot
swap on every worker, metrics summed over workers (dead ones included), no prediction log row lost when
the workers stop or are reloaded, idle clients that do not stop serving, request limits, and the
request id and client IP behind a proxy."""

import json
import os
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from governance.models import AuditEntry
from serving.models import PredictionLog
from tests.e2e import processes
from tests.e2e.test_processes import _free_port, _status
from tests.serving.conftest import IRIS_ROW

pytestmark = pytest.mark.django_db(transaction=True)


def _predict(base, timeout=10):
    request = urllib.request.Request(
        f"{base}/api/v1/models/iris-clf/predict",
        data=json.dumps({"instances": [IRIS_ROW]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def _counted(base):
    metrics = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith('prediction_requests_total{model="iris-clf"') and 'status="200"' in line
    )


@pytest.fixture
def web(tmp_path, register, promote, django_capture_on_commit_callbacks, settings):
    """iris-clf v1 in production and the web server started on it; yields (base url, process, metrics dir)."""
    signal_file = tmp_path / "signal"
    settings.SERVING_SIGNAL_FILE = str(signal_file)
    with django_capture_on_commit_callbacks(execute=True):
        promote(register())
    port = _free_port()
    metrics_dir = tmp_path / "prometheus"
    process = processes.start_web(
        tmp_path,
        port=port,
        SERVING_REQUIRE_AUTH="0",
        SERVING_DEFAULT_MODEL="iris-clf",
        SERVING_SIGNAL_FILE=str(signal_file),
        SERVING_MAX_BODY_BYTES="20000",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        PREDICTION_LOG_FLUSH_SECONDS="5",  # long: the rows must be written by the flush at shutdown
    )
    base = f"http://127.0.0.1:{port}"
    try:
        processes.wait_for(lambda: _status(f"{base}/health") == 200, timeout=60, process=process, what="the server")
        yield base, process, metrics_dir
    finally:
        if process.poll() is None:
            processes.stop(process)


def test_two_workers_swap_versions_within_a_request_and_lose_no_log_row(
    web, register, promote, django_capture_on_commit_callbacks
):
    base, process, metrics_dir = web
    with ThreadPoolExecutor(8) as pool:  # concurrent keep-alive-less clients: the kernel spreads them
        answered = list(pool.map(lambda _: _predict(base)["version"], range(160)))
    assert set(answered) == {1}
    pids = {path.name.split("_")[-1] for path in metrics_dir.glob("counter_*.db")}
    assert len(pids) == 2, f"both workers should have answered: {pids}"

    v2 = register()
    with django_capture_on_commit_callbacks(execute=True):
        promote(v2)
    promoted_at = time.monotonic()
    swapped = [_predict(base)["version"] for _ in range(40)]
    elapsed = time.monotonic() - promoted_at
    assert set(swapped) == {2}, swapped  # every request after the commit, on either worker
    assert elapsed < 5
    assert _counted(base) == 200  # both workers' counters, added up
    processes.stop(process)
    assert process.returncode == 0, process.log.read_text()[-2000:]
    # Rows still queued when SIGTERM came were written as each worker ended.
    assert PredictionLog.objects.filter(model_name="iris-clf", deployment_mode="primary").count() == 200


def _requests_per_worker(metrics_dir):
    """{pid: requests it has handled}, read from each worker's own metrics file."""
    from prometheus_client.mmap_dict import MmapedDict

    counts = {}
    for path in metrics_dir.glob("counter_*.db"):
        values = MmapedDict.read_all_values_from_file(str(path))
        counts[path.name.split("_")[-1]] = sum(
            entry[1] for entry in values if "django_http_requests_before_middlewares_total" in entry[0]
        )
    return counts


def test_keep_alive_connections_are_spread_over_the_workers(web):
    """16 keep-alive connections opened at once (a client's pool): both workers take a share, where on one
    shared socket the first worker to wake could accept them all."""
    import http.client

    base, _process, metrics_dir = web
    before = _requests_per_worker(metrics_dir)
    host, port = base.removeprefix("http://").split(":")
    clients = [http.client.HTTPConnection(host, int(port), timeout=10) for _ in range(16)]
    for client in clients:
        client.connect()
    for _ in range(10):
        for client in clients:
            client.request("GET", "/v2/health/live")
            client.getresponse().read()
    for client in clients:
        client.close()
    after = _requests_per_worker(metrics_dir)
    served = {pid: after[pid] - before.get(pid, 0) for pid in after}
    assert len(served) == 2, served
    assert min(served.values()) >= 20, served  # of 160


def test_idle_and_slow_clients_do_not_stop_serving(web):
    """200 connections held open, half sending nothing, half stuck half-way through their headers: every
    prediction is still answered, promptly (gunicorn's gthread, one thread a worker, answered none).

    A client stuck in its *body* is another matter: granian hands a request to Python once its headers
    are in, and reading the body then waits for it, holding that worker's thread. In front of the web
    server, the buffering proxy (nginx in compose, the ingress on Kubernetes) reads whole requests first;
    README, "The web server"."""
    base, _process, _ = web
    port = int(base.rsplit(":", 1)[1])
    idle = []
    try:
        for index in range(200):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            if index % 2:  # stuck half-way through its headers
                sock.sendall(b"POST /api/v1/models/iris-clf/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
            idle.append(sock)
        time.sleep(0.5)
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            answered = list(pool.map(lambda _: _predict(base, timeout=5)["version"], range(100)))
        elapsed = time.monotonic() - started
    finally:
        for sock in idle:
            sock.close()
    assert answered == [1] * 100
    assert elapsed < 10, elapsed


def _load(base, stop, answered, failures):
    while not stop.is_set():
        try:
            _predict(base, timeout=30)  # slow while a respawned worker warms up on a loaded machine, never refused
            answered.append(1)
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            failures.append(repr(exc))


def test_graceful_reload_and_a_crashed_worker_lose_nothing(web):
    """SIGHUP respawns every worker while clients keep asking: no request fails and every answered
    prediction is logged. A worker killed outright is replaced, and its counters still count."""
    base, process, metrics_dir = web
    stop, answered, failures = threading.Event(), [], []
    clients = [threading.Thread(target=_load, args=(base, stop, answered, failures)) for _ in range(4)]
    for client in clients:
        client.start()
    try:
        time.sleep(1)
        before = set(processes.worker_pids(process))
        os.kill(process.pid, signal.SIGHUP)
        processes.wait_for(
            lambda: not (set(processes.worker_pids(process)) & before) and len(processes.worker_pids(process)) == 2,
            timeout=60,
            process=process,
            what="both workers respawned",
        )
        time.sleep(1)
    finally:
        stop.set()
        for client in clients:
            client.join()
    assert not failures, failures[:5]
    assert _counted(base) == len(answered)  # the old workers' counters are kept

    # A worker killed outright (no flush: its queued log rows are lost, as with any crash) is respawned.
    # Not within 5.5 s of its start: granian takes a worker dying that soon for a crash loop, and exits.
    time.sleep(6)
    victim = processes.worker_pids(process)[0]
    os.kill(victim, signal.SIGKILL)
    processes.wait_for(
        lambda: victim not in processes.worker_pids(process) and len(processes.worker_pids(process)) == 2,
        timeout=60,
        process=process,
        what="the killed worker replaced",
    )
    processes.wait_for(lambda: _status(f"{base}/health") == 200, timeout=30, process=process, what="serving again")
    assert _counted(base) == len(answered)

    processes.stop(process)
    logged = PredictionLog.objects.filter(model_name="iris-clf").count()
    assert logged == len(answered), (logged, len(answered))


def test_request_limits_request_id_and_client_ip_behind_a_proxy(web, scientist):
    base, _process, _ = web
    # A body over SERVING_MAX_BODY_BYTES is refused by its declared length, naming the body.
    big = json.dumps({"instances": [IRIS_ROW] * 400}).encode()
    request = urllib.request.Request(f"{base}/api/v1/models/iris-clf/predict", data=big)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 400
    assert json.loads(refused.value.read())["field"] == "body"
    # Headers past the server's buffer are refused by the server itself; it keeps serving.
    with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), timeout=10) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 600_000 + b"\r\n\r\n")
        try:
            first = sock.recv(100)
        except ConnectionResetError:
            first = b""
    assert not first.startswith(b"HTTP/1.1 200"), first
    assert _predict(base)["version"] == 1

    # Behind a proxy (this test's address is a trusted one): the client's IP and request id are audited.
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=scientist).key
    form = (
        b'--b\r\nContent-Disposition: form-data; name="name"\r\n\r\nproxied\r\n'
        b'--b\r\nContent-Disposition: form-data; name="target"\r\n\r\ny\r\n'
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="d.csv"\r\n'
        b"Content-Type: text/csv\r\n\r\n"
        + b"x,y\n"
        + b"".join(b"%d,%d\n" % (i, i % 2) for i in range(40))
        + b"\r\n--b--\r\n"
    )
    request = urllib.request.Request(
        f"{base}/api/v1/datasets",
        data=form,
        headers={
            "Content-Type": "multipart/form-data; boundary=b",
            "Authorization": f"Token {token}",
            "X-Request-ID": "proxied-upload-1",
            "X-Forwarded-For": "203.0.113.7, 127.0.0.1",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status in (200, 201)
        assert response.headers["X-Request-ID"] == "proxied-upload-1"
    entry = AuditEntry.objects.get(request_id="proxied-upload-1")
    assert entry.ip_address == "203.0.113.7"
