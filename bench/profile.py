"""Where a single-row prediction's time goes, on the running production server, by py-spy.

    .venv/bin/python bench/profile.py [--seconds 15] [--rows 1] [--log-off] [--postgres SERVER_URL]

Sets up the bench's forest (bench/serving.py), starts serve.py with one worker, drives
POST /api/v1/models/iris-rf/predict with 8 keep-alive connections and samples the worker with
py-spy meanwhile. Each sample is put under the deepest part of the path its stack is in (a middleware,
DRF's dispatch, authentication, throttling, JSON parsing and rendering, input checks, the model, the
metrics, the log hand-off, ...), and the table gives each part's share and its microseconds a request.
"""

import argparse
import collections
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen  # noqa: E402

import serving as bench  # noqa: E402  (bench/serving.py: its setup and helpers)

# (part, a substring of a py-spy frame "function (file:line)"); the deepest frame that matches wins.
PARTS = [
    ("granian's WSGI glue", "granian/"),
    ("Django request/response objects", "django/core/handlers/"),
    ("Django request/response objects", "django/http/"),
    ("middleware: django_prometheus", "django_prometheus/"),
    ("middleware: security", "django/middleware/security.py"),
    ("middleware: whitenoise", "whitenoise/"),
    ("middleware: sessions", "django/contrib/sessions/"),
    ("middleware: common", "django/middleware/common.py"),
    ("middleware: csrf", "django/middleware/csrf.py"),
    ("middleware: auth", "django/contrib/auth/middleware.py"),
    ("middleware: messages", "django/contrib/messages/"),
    ("middleware: request id (governance.context)", "governance/context.py"),
    ("middleware: clickjacking", "django/middleware/clickjacking.py"),
    ("URL resolution", "django/urls/"),
    ("DRF dispatch (request, negotiation, response)", "rest_framework/"),
    ("authentication", "rest_framework/authentication.py"),
    ("authentication", "core/auth.py"),
    ("throttling", "serving/access.py"),
    ("JSON parsing", "json_loads (serving/api.py"),
    ("view: building the answer", "post (serving/api.py"),
    ("view: building the answer", "native_answer (serving/api.py"),
    ("fast path: body, request id, JSON rendering, answer", "serving/fast.py"),
    ("fast path: django_prometheus's counters", "count (serving/fast.py"),
    ("fast path: Host check (ALLOWED_HOSTS)", "get_host (django/http/request.py"),
    ("JSON rendering", "render (serving/api.py"),
    ("routing (runtime, change signal)", "serving/runtime.py"),
    ("routing (runtime, change signal)", "serving/signal.py"),
    ("input checks", "serving/inputs.py"),
    ("model (onnxruntime)", "predict (serving/runtime.py"),
    ("metrics", "_count_success (serving/predict.py"),
    ("prediction log hand-off", "_log_handoff (serving/predict.py"),
    ("prediction log writer thread", "serving/predlog.py"),
]


def _part(stack):
    found = "other (Python runtime, GC)"
    for frame in stack:  # root first
        for part, needle in PARTS:
            if needle in frame:
                found = part
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--log-off", action="store_true", help="with the prediction log off")
    parser.add_argument(
        "--postgres",
        metavar="SERVER_URL",
        help="the store in a new database on this PostgreSQL server (dropped at the end), as in production: "
        "the log writer's share is then its COPY, PostgreSQL's own work being in another process",
    )
    args = parser.parse_args()
    var, env, database, _forms = bench.setup_store("mlops-profile-", args.postgres)
    port = bench._free_port()
    server_env = {**env, "PORT": str(port), "WEB_HOST": "127.0.0.1", "WEB_WORKERS": "1"}
    if args.log_off:
        server_env["PREDICTION_LOG_ENABLED"] = "0"
    process = bench._start([bench.PYTHON, "serve.py"], server_env, var / "web.log")
    url = f"http://127.0.0.1:{port}/api/v1/models/iris-rf/predict"
    body = json.dumps({"instances": [bench.ROW] * args.rows}).encode()
    raw = var / "profile.txt"
    try:
        bench._wait(url.replace("/predict", "/ping"), process)
        loadgen.run(url, body, concurrency=8, seconds=2)
        worker = int(Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()[0])
        spy = subprocess.Popen(
            [str(Path(bench.PYTHON).parent / "py-spy"), "record", "--pid", str(worker), "--rate", "500", "--format",
             "raw", "--output", str(raw), "--duration", str(int(args.seconds)), "--threads", "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.5)
        rps, _p50, _p99, errors = loadgen.run(url, body, concurrency=8, seconds=args.seconds - 1)
        spy.wait(timeout=60)
    finally:
        bench._stop(process)
        if database:
            bench._postgres_drop(args.postgres, database)
    samples = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        samples[_part(frames[1:] if frames and frames[0].startswith("thread") else frames)] += int(count)
    total = sum(samples.values())
    requests = rps * args.seconds
    log = "off" if args.log_off else "on"
    store = "PostgreSQL" if args.postgres else "SQLite"
    print(
        f"\n{args.rows}-row predictions (log {log}, {store}), 1 worker, 8 connections: {rps:.0f} req/s, "
        f"{len(errors)} errors"
    )
    print(f"{total} samples at 500 Hz of the worker's busy Python threads\n")
    print(f"| {'part of the request':<48} | {'share':>6} | {'µs a request':>12} |")
    print(f"| {'-' * 48} | {'-' * 6} | {'-' * 12} |")
    for part, count in samples.most_common():
        print(f"| {part:<48} | {count / total:>6.1%} | {count / 500 / requests * 1e6:>12.0f} |")


if __name__ == "__main__":
    main()
