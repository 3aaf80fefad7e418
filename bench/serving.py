"""Our prediction API under gunicorn against `mlflow models serve`, on the same registered models.

    .venv/bin/python bench/serving.py [--seconds 5] [--rounds 3] [--concurrency 16] [--workers 2]

Makes a throwaway store (SQLite, local MLflow) under a temporary folder, trains a 100-tree random
forest and a logistic regression on iris, registers and promotes each (request + approval by two
users), mirrors them to MLflow, then for each model starts three servers side by side and drives
them in turns, `--rounds` times, with the same load (single-row requests, `--concurrency`
keep-alive connections):
  - ours: gunicorn with --workers, prediction log and metrics on;
  - ours with the prediction log off (to show what logging costs);
  - MLflow: `mlflow models serve -m models:/NAME@production --env-manager local` with --workers.
Prints the median throughput and p50/p99 latency of each (and each turn's throughput: this machine's
speed drifts, and taking turns makes the drift hit every server alike), and the ratios.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen  # noqa: E402

BASE = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
ROW = {"sepal_length_cm": 5.9, "sepal_width_cm": 3.0, "petal_length_cm": 4.2, "petal_width_cm": 1.5}

SETUP = """
import json
from django.contrib.auth import get_user_model
from experiments.services import run_launch
from registry import services
users = get_user_model()
requester = users.objects.create_superuser("bench-requester", password="x")
approver = users.objects.create_superuser("bench-approver", password="x")
forms = {}
for name, algorithm, params in [
    ("iris-rf", "random_forest", {"n_estimators": 100}),
    ("iris-lr", "logistic_regression", {}),
]:
    run = run_launch(experiment="bench", dataset="iris", algorithm=algorithm, params=params, inline=True)
    version = services.model_version_register(run_id=run.pk, model_name=name, by=requester)
    request = services.promotion_request_create(version=version, to_stage="production", reason="bench", by=requester)
    services.promotion_request_approve(request_id=request.pk, by=approver)
    assert services.model_mirror_to_mlflow(model_id=version.model_id)
    forms[name] = version.serving_form
print("FORMS " + json.dumps(forms))
"""


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(url, process, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited ({process.returncode}); see its log in {process.log}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not answer within {timeout} s")


def _start(args, env, log):
    output = open(log, "wb")  # noqa: SIM115  (closed with the process)
    process = subprocess.Popen(args, cwd=BASE, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    process.log = log
    return process


def _stop(process):
    import signal

    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def _warm(url, body, args):
    for _ in range(20):  # load the model in every worker
        loadgen.run(url, body or b"", concurrency=args.workers * 2, seconds=0.2, method="POST" if body else "GET")


def _median(values):
    return statistics.median(values) if values else float("nan")


def _servers(model, env, var, args):
    """(label, process, ping url, predict url, body) of the three servers measured for `model`."""
    ours_body = json.dumps({"instances": [ROW]}).encode()
    mlflow_body = json.dumps({"dataframe_split": {"columns": list(ROW), "data": [list(ROW.values())]}}).encode()
    servers = []
    for label, extra in (("ours", {}), ("ours, log off", {"PREDICTION_LOG_ENABLED": "0"})):
        port = _free_port()
        server_env = {**env, **extra, "GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": str(args.workers)}
        log = var / f"{model}-{label.replace(', ', '-').replace(' ', '-')}.log"
        process = _start(
            [PYTHON, "-m", "gunicorn", "-c", "gunicorn.conf.py", "mlops_site.wsgi:application"], server_env, log
        )
        base = f"http://127.0.0.1:{port}/api/v1/models/{model}"
        servers.append((label, process, f"{base}/ping", f"{base}/predict", ours_body))
        if label == "ours":
            # The floor under any prediction: an empty request through the same Django and gunicorn.
            live = f"http://127.0.0.1:{port}/v2/health/live"
            servers.append(("ours, empty GET", process, live, live, None))
    port = _free_port()
    command = [PYTHON, "-m", "mlflow", "models", "serve", "-m", f"models:/{model}@production", "--env-manager", "local"]
    process = _start(
        [*command, "-h", "127.0.0.1", "-p", str(port), "--workers", str(args.workers)], env, var / f"{model}-mlflow.log"
    )
    base = f"http://127.0.0.1:{port}"
    servers.append(("mlflow", process, f"{base}/ping", f"{base}/invocations", mlflow_body))
    return servers


def _measure_model(model, env, var, args):
    """Run the three servers side by side (idle ones cost nothing) and measure them in turns,
    `--rounds` times, so that a machine getting slower or faster mid-run hits all three alike."""
    servers = _servers(model, env, var, args)
    samples = {label: [] for label, *_ in servers}
    try:
        for _label, process, ping, url, body in servers:
            _wait(ping, process)
            _warm(url, body, args)
        for _ in range(args.rounds):
            for label, _process, _ping, url, body in servers:
                rps, p50, p99, errors = loadgen.run(
                    url,
                    body or b"",
                    concurrency=args.concurrency,
                    seconds=args.seconds,
                    method="POST" if body else "GET",
                )
                if errors:
                    print(f"  {model} {label}: {len(errors)} errors, e.g. {errors[:3]}", file=sys.stderr)
                samples[label].append((rps, p50, p99, len(errors)))
    finally:
        for process in {id(process): process for _label, process, *_ in servers}.values():
            _stop(process)
    return {
        label: {
            "rps": _median([x[0] for x in runs]),
            "rps_all": [x[0] for x in runs],
            "p50": _median([x[1] for x in runs]),
            "p99": _median([x[2] for x in runs]),
            "errors": sum(x[3] for x in runs),
        }
        for label, runs in samples.items()
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one measurement")
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each server, taken in turns")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--models", default="iris-rf,iris-lr", help="which of iris-rf, iris-lr to measure")
    parser.add_argument("--keep", action="store_true", help="keep the temporary store and logs")
    args = parser.parse_args()

    var = Path(tempfile.mkdtemp(prefix="mlops-bench-"))
    env = {
        **os.environ,
        "MLOPS_VAR_DIR": str(var),
        "DATABASE_URL": f"sqlite:///{var}/db.sqlite3",
        "MLFLOW_TRACKING_URI": f"sqlite:///{var}/mlflow.db",
        # As in production: DEBUG keeps every query in memory and costs the prediction log dearly.
        "DEBUG": "0",
        "SECRET_KEY": "bench-only-secret-key",
        "SERVING_REQUIRE_AUTH": "0",
        "SERVING_THROTTLE_RATE": "1000000/second",
        "PROMETHEUS_MULTIPROC_DIR": str(var / "prometheus"),
        # mlflow models serve runs `uvicorn` from PATH: this interpreter's.
        "PATH": f"{Path(PYTHON).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("CELERY_BROKER_URL", None)
    print(f"store: {var}", file=sys.stderr)
    subprocess.run([PYTHON, "manage.py", "migrate", "-v", "0"], cwd=BASE, env=env, check=True)
    setup = subprocess.run(
        [PYTHON, "manage.py", "shell", "-c", SETUP], cwd=BASE, env=env, check=True, capture_output=True, text=True
    )
    forms = json.loads(next(line for line in setup.stdout.splitlines() if line.startswith("FORMS "))[6:])

    results = {}
    try:
        for model in args.models.split(","):
            results[model] = _measure_model(model, env, var, args)
    finally:
        if not args.keep:
            shutil.rmtree(var, ignore_errors=True)

    print(
        f"\nsingle-row requests, {args.concurrency} connections, {args.workers} workers per server, "
        f"{os.cpu_count()} cores; median of {args.rounds} turns of {args.seconds:g} s each\n"
    )
    print(f"{'model':<9} {'server':<31} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}   req/s of each turn")
    for model, by_label in results.items():
        for label, r in by_label.items():
            server = {"mlflow": "mlflow models serve", "ours, empty GET": "ours, GET /v2/health/live"}.get(
                label, f"{label} ({forms[model]})"
            )
            turns = " ".join(f"{x:.0f}" for x in r["rps_all"])
            print(
                f"{model:<9} {server:<31} {r['rps']:>7.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['errors']:>7}   {turns}"
            )
    print()
    for model, by_label in results.items():
        ours, off, empty, mlflow = (by_label[k] for k in ("ours", "ours, log off", "ours, empty GET", "mlflow"))
        print(
            f"{model}: ours / mlflow throughput {ours['rps'] / mlflow['rps']:.1f}x "
            f"(best turn against best turn {max(ours['rps_all']) / max(mlflow['rps_all']):.1f}x), "
            f"p50 {mlflow['p50'] / ours['p50']:.1f}x lower; logging on / off {ours['rps'] / off['rps']:.2f}; "
            f"a prediction / an empty request {ours['rps'] / empty['rps']:.2f}"
        )


if __name__ == "__main__":
    main()
