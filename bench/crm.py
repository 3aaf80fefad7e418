"""The CRM refresh of many customers, the batch way against the naive way, on the same machine and store.

    .venv/bin/python bench/crm.py [--customers 100000] [--loop-customers 3000] [--rounds 2]
                                  [--workers 2] [--concurrency 4] [--database-url URL]

Makes a throwaway store (SQLite under a temporary folder, or a new PostgreSQL database on the server
of --database-url), trains the demo model (a 100-tree forest on 2,000 customer_churn rows), registers
and promotes it (request + approval by two users) and seeds the embedded CRM with --customers
synthetic customers. Then, in turns, --rounds times, each from the same state (every segment empty,
so every customer's segment is written):
  - the naive way, as the specification does it: one POST /crm_segment_update?customer_id=... per
    customer against gunicorn (--workers, prediction log and metrics on, DEBUG off), from --concurrency
    keep-alive connections, over the first --loop-customers customers; its rate gives the time the
    loop would take for every customer;
  - the batch way: `manage.py crm_refresh --all` (read the features in chunks, predict each chunk as
    one batch through serving.predict, write the changed segments), every customer, timed by the job
    and as a whole process (start-up and the prediction log's last flush included), its peak memory
    read from the kernel (ru_maxrss).
"""

import argparse
import asyncio
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
from urllib.parse import urlsplit

BASE = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

SETUP = """
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from experiments.services import run_launch
from registry import services
from serving.crm.services import customers_seed
users = get_user_model()
bench = users.objects.create_superuser("bench", password="x")
approver = users.objects.create_superuser("bench-approver", password="x")
run = run_launch(experiment="bench-crm", dataset="customer_churn", n_samples=2000, algorithm="random_forest",
                 params={"n_estimators": 100, "max_depth": 8}, inline=True)
version = services.model_version_register(run_id=run.pk, model_name="churn", by=bench)
request = services.promotion_request_create(version=version, to_stage="production", reason="bench", by=bench)
services.promotion_request_approve(request_id=request.pk, by=approver)
customers_seed(count=%d, by=bench)
print("TOKEN " + Token.objects.create(user=bench).key + " FORM " + version.serving_form)
"""
RESET = """
from serving.crm.models import Customer, SegmentChange, CrmRefresh
from serving.models import PredictionLog
Customer.objects.update(segment="", segment_model="", segment_version=None, segment_set_at=None,
                        segment_request_id="", segment_set_by="")
SegmentChange.objects.all().delete(); CrmRefresh.objects.all().delete(); PredictionLog.objects.all().delete()
"""
COUNT = """
from serving.crm.models import Customer, SegmentChange
from serving.models import PredictionLog
left = Customer.objects.filter(segment="").count()
print("COUNT", left, SegmentChange.objects.count(), PredictionLog.objects.count())
"""
LAST_REFRESH = """
import json
from serving.crm.models import CrmRefresh
r = CrmRefresh.objects.order_by("-id").first()
print("REFRESH " + json.dumps({"status": r.status, "processed": r.processed, "updated": r.updated,
      "failed": r.failed, "seconds": (r.finished_at - r.started_at).total_seconds()}))
"""


def _manage(env, *args, capture=True):
    result = subprocess.run(
        [PYTHON, "manage.py", *args], cwd=BASE, env=env, check=True, capture_output=capture, text=True
    )
    return result.stdout if capture else ""


def _shell(env, code):
    return _manage(env, "shell", "-c", code)


def _line(output, tag):
    return next(line for line in output.splitlines() if line.startswith(tag + " "))[len(tag) + 1 :]


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


async def _connection(host, port, paths, token, latencies, errors):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for path in paths:
            started = time.perf_counter()
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Token {token}\r\n"
                "Content-Length: 0\r\n\r\n".encode()
            )
            await writer.drain()
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if b" 200 " not in status_line:
                errors.append(f"{status_line.decode().strip()} {body[:200]!r}")
    finally:
        writer.close()


def _naive_loop(base, customer_ids, token, concurrency):
    """One POST /crm_segment_update per customer from `concurrency` keep-alive connections; returns
    (customers per second, p50 ms, errors)."""
    url = urlsplit(base)
    paths = [f"/crm_segment_update?customer_id={cid}" for cid in customer_ids]
    shares = [paths[i::concurrency] for i in range(concurrency)]
    latencies, errors = [], []

    async def main():
        await asyncio.gather(
            *(_connection(url.hostname, url.port, share, token, latencies, errors) for share in shares)
        )

    started = time.perf_counter()
    asyncio.run(main())
    elapsed = time.perf_counter() - started
    latencies.sort()
    return len(paths) / elapsed, latencies[len(latencies) // 2] * 1000, errors


def _batch(env, *scope):
    """manage.py crm_refresh in its own process: (the job, process seconds, peak RSS MiB)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [PYTHON, "manage.py", "crm_refresh", *scope, "--user", "bench"],
        cwd=BASE,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"crm_refresh failed:\n{output}")
    job = json.loads(_line(_shell(env, LAST_REFRESH), "REFRESH"))
    if job["status"] != "finished" or job["failed"]:
        raise SystemExit(f"the refresh did not finish cleanly: {job}")
    return job, elapsed, usage.ru_maxrss / 1024


def _postgres_database(url):
    """A fresh database beside the one --database-url names; returns its URL and a function dropping it."""
    import psycopg2

    parts = urlsplit(url)
    name = f"crm_bench_{os.getpid()}"
    admin = psycopg2.connect(
        host=parts.hostname, port=parts.port or 5432, user=parts.username, password=parts.password, dbname="postgres"
    )
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')

    def drop():
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()

    return parts._replace(path=f"/{name}").geturl(), drop


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--loop-customers", type=int, default=3000, help="customers the naive loop updates per turn")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--database-url", default="", help="a PostgreSQL server to use (a new database is made)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary store and logs")
    args = parser.parse_args()

    var = Path(tempfile.mkdtemp(prefix="mlops-bench-crm-"))
    drop = None
    database_url = f"sqlite:///{var}/db.sqlite3"
    if args.database_url:
        database_url, drop = _postgres_database(args.database_url)
    env = {
        **os.environ,
        "MLOPS_VAR_DIR": str(var),
        "DATABASE_URL": database_url,
        "MLFLOW_TRACKING_URI": f"sqlite:///{var}/mlflow.db",
        "DEBUG": "0",  # as in production: DEBUG keeps every query in memory
        "SECRET_KEY": "bench-only-secret-key",
        "HTTPS_ONLY": "0",  # plain HTTP on localhost
        "SERVING_THROTTLE_RATE": "1000000/second",
        "PROMETHEUS_MULTIPROC_DIR": str(var / "prometheus"),
        "LOG_LEVEL": "WARNING",  # a log line per customer is the same cost on both sides; off for both
    }
    env.pop("CELERY_BROKER_URL", None)
    env.pop("CRM_URL", None)
    (var / "prometheus").mkdir()
    store = "PostgreSQL" if args.database_url else "SQLite"
    print(f"store: {var} ({store})", file=sys.stderr)
    server = None
    try:
        _manage(env, "migrate", "-v", "0")
        setup_started = time.perf_counter()
        setup = _shell(env, SETUP % args.customers)
        token, _, form = _line(setup, "TOKEN").partition(" FORM ")
        print(f"trained, promoted ({form}) and seeded {args.customers:,} customers in "
              f"{time.perf_counter() - setup_started:.0f} s", file=sys.stderr)  # fmt: skip
        port = _free_port()
        log = var / "gunicorn.log"
        server = subprocess.Popen(
            [PYTHON, "-m", "gunicorn", "-c", "gunicorn.conf.py", "mlops_site.wsgi:application"],
            cwd=BASE,
            env={**env, "GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": str(args.workers)},
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        server.log = log
        base = f"http://127.0.0.1:{port}"
        _wait(f"{base}/health", server)
        ids = [f"CUST_TEST_{i:03d}" for i in range(1, 11)] + [f"CUST_{i:07d}" for i in range(11, args.customers + 1)]
        loop_ids = ids[: args.loop_customers]
        _naive_loop(base, ids[-40:], token, args.concurrency)  # load the model in every worker

        turns = []
        for turn in range(args.rounds):
            _shell(env, RESET)
            rate, p50, errors = _naive_loop(base, loop_ids, token, args.concurrency)
            if errors:
                raise SystemExit(f"the naive loop had {len(errors)} errors, e.g. {errors[:3]}")
            left, changes, logged = map(int, _line(_shell(env, COUNT), "COUNT").split())
            assert changes == len(loop_ids), (changes, len(loop_ids))
            _shell(env, RESET)
            job, elapsed, peak = _batch(env, "--all")
            left, changes, logged = map(int, _line(_shell(env, COUNT), "COUNT").split())
            assert (left, changes, logged) == (0, args.customers, args.customers), (left, changes, logged)
            turns.append({"rate": rate, "p50": p50, "job": job["seconds"], "process": elapsed, "peak": peak})
            print(f"turn {turn + 1}: loop {rate:,.0f} customers/s (p50 {p50:.1f} ms); "
                  f"batch job {job['seconds']:.1f} s, process {elapsed:.1f} s, peak {peak:,.0f} MiB",
                  file=sys.stderr)  # fmt: skip
        # The same command with nothing to do (no customer changed since): the memory of the process
        # itself, Django and the loaded model, without the refresh's chunks.
        idle_job, _, idle_peak = _batch(env)
        assert idle_job["processed"] == 0, idle_job
    finally:
        if server is not None:
            import signal

            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        if drop:
            drop()
        if not args.keep:
            shutil.rmtree(var, ignore_errors=True)

    rate = statistics.median(t["rate"] for t in turns)
    job = statistics.median(t["job"] for t in turns)
    process = statistics.median(t["process"] for t in turns)
    peak = max(t["peak"] for t in turns)
    loop_seconds = args.customers / rate
    print(
        f"\n{args.customers:,} customers, {store}, {os.cpu_count()} cores, gunicorn --workers {args.workers}, "
        f"{args.concurrency} connections; median of {args.rounds} turns\n"
    )
    print(f"{'':<53} {'customers/s':>12} {'time for all':>13}")
    print(f"{'naive: one POST /crm_segment_update each':<53} {rate:>12,.0f} {loop_seconds:>12.0f}s"
          f"   (measured over {args.loop_customers:,} customers a turn)")  # fmt: skip
    print(f"{'batch: crm_refresh --all, the job':<53} {args.customers / job:>12,.0f} {job:>12.1f}s")
    whole = "batch: the whole process (start-up, last log flush)"
    print(f"{whole:<53} {args.customers / process:>12,.0f} {process:>12.1f}s")
    print(f"\nbatch / naive: {loop_seconds / job:.0f}x (job), {loop_seconds / process:.0f}x (whole process); "
          f"peak memory of the batch process {peak:,.0f} MiB ({idle_peak:,.0f} MiB with nothing to refresh); "
          f"turns: " + ", ".join(f"{t['job']:.1f} s / {t['rate']:,.0f} per s" for t in turns))  # fmt: skip


if __name__ == "__main__":
    main()
