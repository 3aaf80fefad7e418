"""The prediction API under gunicorn with two worker processes: hot swap, metrics summed over
workers, and no prediction log row lost when the workers stop."""

import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from serving.models import PredictionLog
from tests.e2e import processes
from tests.e2e.test_processes import _free_port, _status
from tests.serving.conftest import IRIS_ROW

pytestmark = pytest.mark.django_db(transaction=True)


def _predict(base):
    request = urllib.request.Request(
        f"{base}/api/v1/models/iris-clf/predict",
        data=json.dumps({"instances": [IRIS_ROW]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_two_workers_swap_versions_within_a_second_and_lose_no_log_row(
    tmp_path, register, promote, django_capture_on_commit_callbacks, settings
):
    signal_file = tmp_path / "signal"
    settings.SERVING_SIGNAL_FILE = str(signal_file)
    with django_capture_on_commit_callbacks(execute=True):
        promote(register())
    port = _free_port()
    metrics_dir = tmp_path / "prometheus"
    process = processes.start(
        "gunicorn",
        "-c",
        "gunicorn.conf.py",
        "mlops_site.wsgi:application",
        log=tmp_path / "gunicorn.log",
        GUNICORN_BIND=f"127.0.0.1:{port}",
        GUNICORN_WORKERS="2",
        SERVING_REQUIRE_AUTH="0",
        SERVING_DEFAULT_MODEL="iris-clf",
        SERVING_SIGNAL_FILE=str(signal_file),
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        PREDICTION_LOG_FLUSH_SECONDS="5",  # long: the rows must be written by the flush at shutdown
    )
    base = f"http://127.0.0.1:{port}"
    try:
        processes.wait_for(lambda: _status(f"{base}/health") == 200, timeout=60, process=process, what="gunicorn")
        with ThreadPoolExecutor(8) as pool:  # concurrent clients, so both workers take connections
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

        metrics = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
        counted = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith('prediction_requests_total{model="iris-clf"') and 'status="200"' in line
        )
        assert counted == 200  # both workers' counters, added up
    finally:
        processes.stop(process)
    # Rows still queued when SIGTERM came were written by worker_exit's flush.
    assert PredictionLog.objects.filter(model_name="iris-clf", deployment_mode="primary").count() == 200
