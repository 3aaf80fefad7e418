"""Our prediction API against `mlflow models serve`, on the same registered models, in one run.

    .venv/bin/python bench/serving.py [--seconds 5] [--rounds 3] [--concurrency 16] [--workers 2]

Makes a throwaway store (SQLite, local MLflow) under a temporary folder, trains a 100-tree random
forest and a logistic regression on iris, registers and promotes each (request + approval by two
users), mirrors them to MLflow, then for each model starts the servers side by side and drives them
in turns, `--rounds` times, with the same load (`--concurrency` keep-alive connections):
  - ours: the production web server (serve.py, granian) with --workers, prediction log and metrics on;
    the same with the prediction log off (what logging costs); an empty GET /v2/health/live on it
    (the floor under any prediction);
  - gunicorn (gunicorn.conf.py, the previous production server) on the same app, for the choice of
    server: predictions, empty requests and the admin's login page against ours (forest only);
  - MLflow: `mlflow models serve -m models:/NAME@production --env-manager local` with --workers;
  - batches of 100 and 1,000 rows, ours against MLflow, in rows per second (forest only).
With the log on, a turn ends when the log has written the last row of its requests (the writer runs
behind when requests bring rows faster than the database takes them): "logged" is the requests a
second over the turn and that wait beyond one flush interval (the column "drain s" is the whole wait),
the throughput the targets use.
Prints the median throughput and p50/p99 latency of each (and each turn's throughput: this machine's
speed drifts, and taking turns makes the drift hit every server alike), the CPU a request cost the
server's processes and PostgreSQL's backends (from /proc), the ratios against the issue's targets, and
all of it as one JSON line at the end.
"""

import argparse
import json
import os
import shutil
import socket
import sqlite3
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
# The prediction log's flush interval on our servers: production's default, set here so the bench knows it.
FLUSH_SECONDS = 0.5
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
    run = run_launch(experiment="bench", dataset="iris", algorithm=algorithm, params=params, inline=True, by=requester)
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


def _ours(env, var, args, label, extra):
    port = _free_port()
    server_env = {**env, **extra, "PORT": str(port), "WEB_HOST": "127.0.0.1", "WEB_WORKERS": str(args.workers)}
    process = _start([PYTHON, "serve.py"], server_env, var / f"{label}.log")
    return process, f"http://127.0.0.1:{port}"


def _gunicorn(env, var, args, label):
    port = _free_port()
    server_env = {**env, "GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": str(args.workers)}
    # The same application as serve.py's (serving.wsgi), so that only the server differs.
    command = [PYTHON, "-m", "gunicorn", "-c", "gunicorn.conf.py", "serving.wsgi:application_build()"]
    return _start(command, server_env, var / f"{label}.log"), f"http://127.0.0.1:{port}"


def _mlflow(model, env, var, args):
    port = _free_port()
    command = [PYTHON, "-m", "mlflow", "models", "serve", "-m", f"models:/{model}@production", "--env-manager", "local"]
    process = _start(
        [*command, "-h", "127.0.0.1", "-p", str(port), "--workers", str(args.workers)], env, var / f"{model}-mlflow.log"
    )
    return process, f"http://127.0.0.1:{port}"


def _bodies(rows):
    ours = json.dumps({"instances": [ROW] * rows}).encode()
    mlflow = json.dumps({"dataframe_split": {"columns": list(ROW), "data": [list(ROW.values())] * rows}}).encode()
    return ours, mlflow


def _plan(model, env, var, args):
    """(processes with their ping url, measurements: (label, url, body or None for a GET, rows))."""
    full = model == "iris-rf"
    ours, ours_url = _ours(env, var, args, f"{model}-ours", {})
    off, off_url = _ours(env, var, args, f"{model}-ours-log-off", {"PREDICTION_LOG_ENABLED": "0"})
    mlflow, mlflow_url = _mlflow(model, env, var, args)
    predict = f"/api/v1/models/{model}/predict"
    ping = f"/api/v1/models/{model}/ping"
    processes = [(ours, ours_url + ping), (off, off_url + ping), (mlflow, mlflow_url + "/ping")]
    one, one_mlflow = _bodies(1)
    plan = [
        ("ours", ours_url + predict, one, 1),
        ("ours, log off", off_url + predict, one, 1),
        ("ours, GET /v2/health/live", ours_url + "/v2/health/live", None, 1),
        ("mlflow", mlflow_url + "/invocations", one_mlflow, 1),
    ]
    if full:
        gunicorn, gunicorn_url = _gunicorn(env, var, args, f"{model}-gunicorn")
        processes.append((gunicorn, gunicorn_url + ping))
        plan += [
            ("gunicorn", gunicorn_url + predict, one, 1),
            ("gunicorn, GET /v2/health/live", gunicorn_url + "/v2/health/live", None, 1),
            ("ours, GET /admin/login/", ours_url + "/admin/login/", None, 1),
            ("gunicorn, GET /admin/login/", gunicorn_url + "/admin/login/", None, 1),
        ]
        for rows in args.batches:
            ours_body, mlflow_body = _bodies(rows)
            plan += [
                (f"ours, {rows} rows", ours_url + predict, ours_body, rows),
                (f"ours, log off, {rows} rows", off_url + predict, ours_body, rows),
                (f"mlflow, {rows} rows", mlflow_url + "/invocations", mlflow_body, rows),
            ]
    return processes, plan


def _base(url):
    """scheme://host:port of a URL: which server a measurement drives."""
    return "/".join(url.split("/", 3)[:3])


def _cpu_ticks(*, group=None, database=None):
    """{pid: user + system CPU ticks so far} of the processes of process group `group` (a server and its
    workers: each server starts in a session of its own), or of the PostgreSQL backends connected to
    `database`; empty where /proc is not there to read."""
    found = {}
    for pid in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            if group is not None and int(fields[2]) != group:
                continue
            if database is not None:
                with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                    command = cmdline.read()
                if not (command.startswith(b"postgres: ") and f" {database} ".encode() in command):
                    continue
            found[pid] = int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return found


def _cpu_seconds_since(before, now):
    """CPU seconds the processes in `now` used since `before` (a process that ended meanwhile is not
    counted: PostgreSQL ends a backend when its client closes the connection)."""
    return sum(ticks - before.get(pid, 0) for pid, ticks in now.items()) / os.sysconf("SC_CLK_TCK")


def _last_log_id(database_url):
    query = "SELECT coalesce(max(id), 0) FROM serving_predictionlog"
    if database_url.startswith("sqlite:///"):
        with sqlite3.connect(database_url[len("sqlite:///") :], timeout=30) as db:
            return db.execute(query).fetchone()[0]
    import psycopg2

    with psycopg2.connect(database_url) as db, db.cursor() as cursor:
        cursor.execute(query)
        return cursor.fetchone()[0]


def _postgres_database(server_url):
    """A new, empty database on the PostgreSQL server at `server_url` (dropped at the end): its URL."""
    import psycopg2

    name = f"mlops_bench_{os.getpid()}"
    admin = psycopg2.connect(server_url.rstrip("/") + "/postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name}")
        cursor.execute(f"CREATE DATABASE {name}")
    admin.close()
    return server_url.rstrip("/") + f"/{name}", name


def _postgres_drop(server_url, name):
    import psycopg2

    admin = psycopg2.connect(server_url.rstrip("/") + "/postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


def _log_drained(database_url, ended):
    """Seconds after the turn `ended` until the prediction log took its last row (the writers run behind
    when requests come faster than the database takes rows), waiting until nothing has come for 1.5 s."""
    last, changed = _last_log_id(database_url), time.perf_counter()
    while time.perf_counter() - changed < 1.5:
        time.sleep(0.1)
        now = _last_log_id(database_url)
        if now != last:
            last, changed = now, time.perf_counter()
    return max(0.0, changed - ended)


def _measure_model(model, env, var, args, database):
    """Run the servers side by side (idle ones cost nothing) and measure them in turns, `--rounds`
    times, so that a machine getting slower or faster mid-run hits all of them alike. `database`: the
    PostgreSQL database the servers use (its backends' CPU is read too), None on SQLite."""
    processes, plan = _plan(model, env, var, args)
    samples = {label: [] for label, *_ in plan}
    servers = {_base(ping): process.pid for process, ping in processes}  # each its own process group
    try:
        for process, ping in processes:
            _wait(ping, process)
        for _label, url, body, _rows in plan:
            _warm(url, body, args)
        for _ in range(args.rounds):
            for label, url, body, _rows in plan:
                cpu = _cpu_ticks(group=servers[_base(url)]), _cpu_ticks(database=database) if database else {}
                rps, p50, p99, errors = loadgen.run(
                    url,
                    body or b"",
                    concurrency=args.concurrency,
                    seconds=args.seconds,
                    method="POST" if body else "GET",
                )
                if errors:
                    print(f"  {model} {label}: {len(errors)} errors, e.g. {errors[:3]}", file=sys.stderr)
                logged, drained = rps, 0.0
                if body and label.startswith("ours") and "log off" not in label:
                    # What the server sustains with its log: the requests over the turn and the time the log
                    # took afterwards to write the last of their rows, beyond the flush interval (a writer that
                    # keeps up is by design up to one interval behind, however long the turn).
                    drained = _log_drained(env["DATABASE_URL"], time.perf_counter())
                    logged = rps * args.seconds / (args.seconds + max(0.0, drained - FLUSH_SECONDS))
                # CPU a request answered, over the turn and the log's wait: of the server's processes (its
                # log writer threads included) and of PostgreSQL's backends (the log's inserts, mostly).
                requests = max(1.0, rps * args.seconds)
                server_us = _cpu_seconds_since(cpu[0], _cpu_ticks(group=servers[_base(url)])) / requests * 1e6
                database_us = float("nan")
                if database:
                    database_us = _cpu_seconds_since(cpu[1], _cpu_ticks(database=database)) / requests * 1e6
                samples[label].append((rps, p50, p99, len(errors), logged, drained, server_us, database_us))
    finally:
        for process, _ping in processes:
            _stop(process)
    rows_of = {label: rows for label, _url, _body, rows in plan}
    return {
        label: {
            "rps": _median([x[0] for x in runs]),
            "rps_all": [x[0] for x in runs],
            "rows_per_s": _median([x[0] for x in runs]) * rows_of[label],
            "p50": _median([x[1] for x in runs]),
            "p99": _median([x[2] for x in runs]),
            "errors": sum(x[3] for x in runs),
            "logged_rps": _median([x[4] for x in runs]),
            "drained_s": _median([x[5] for x in runs]),
            "server_cpu_us": _median([x[6] for x in runs]),
            "database_cpu_us": _median([x[7] for x in runs]),
        }
        for label, runs in samples.items()
    }


def _summary(results, forms, args):
    """The issue's targets, each as (figure, target, met)."""
    summary = {"forms": forms, "workers": args.workers, "connections": args.concurrency, "rounds": args.rounds}
    checks = []

    def check(name, value, target, met):
        summary[name] = round(value, 3)
        checks.append((name, value, target, met))

    for model, r in results.items():
        ours, off, empty, mlflow = r["ours"], r["ours, log off"], r["ours, GET /v2/health/live"], r["mlflow"]
        need = 40 if model == "iris-rf" else 10
        check(
            f"{model} ours/mlflow throughput",
            ours["logged_rps"] / mlflow["rps"],
            f">= {need}x",
            ours["logged_rps"] >= need * mlflow["rps"],
        )
        check(f"{model} mlflow/ours p99", mlflow["p99"] / ours["p99"], ">= 10x", mlflow["p99"] >= 10 * ours["p99"])
        check(f"{model} empty/prediction cost", empty["rps"] / ours["rps"], "<= 1.5", empty["rps"] <= 1.5 * ours["rps"])
        check(
            f"{model} log on/off throughput",
            ours["logged_rps"] / off["rps"],
            ">= 0.90",
            ours["logged_rps"] >= 0.9 * off["rps"],
        )
        # The same with the database on another machine, as in production: what the log costs the web
        # server's own CPU a request (writer threads and hand-off), PostgreSQL's work left out.
        check(
            f"{model} log on/off, server CPU a request",
            off["server_cpu_us"] / ours["server_cpu_us"],
            "- (db elsewhere)",
            True,
        )
        if "gunicorn" in r:
            for what, a, b in (
                ("prediction", "ours", "gunicorn"),
                ("empty request", "ours, GET /v2/health/live", "gunicorn, GET /v2/health/live"),
                ("admin page", "ours, GET /admin/login/", "gunicorn, GET /admin/login/"),
            ):
                check(
                    f"{model} granian/gunicorn {what}",
                    r[a]["rps"] / r[b]["rps"],
                    "> 1 to adopt",
                    r[a]["rps"] > r[b]["rps"],
                )
        for rows in args.batches:
            if f"ours, {rows} rows" in r:
                off_ratio = r[f"ours, log off, {rows} rows"]["rows_per_s"] / r[f"mlflow, {rows} rows"]["rows_per_s"]
                check(f"{model} {rows}-row ours (log off)/mlflow rows per second", off_ratio, "-", True)
                ratio = r[f"ours, {rows} rows"]["logged_rps"] * rows / r[f"mlflow, {rows} rows"]["rows_per_s"]
                target = rows >= 1000
                check(
                    f"{model} {rows}-row ours/mlflow rows per second",
                    ratio,
                    ">= 5x" if target else "-",
                    ratio >= 5 or not target,
                )
    summary["errors"] = sum(x["errors"] for r in results.values() for x in r.values())
    summary["all_targets_met"] = all(met for *_, met in checks)
    return summary, checks


def setup_store(prefix, postgres=None):
    """A throwaway store for a bench and the environment of the processes that use it: SQLite and a local
    MLflow under a new temporary folder, or a new database on the PostgreSQL server at `postgres` (dropped
    by the caller: _postgres_drop); migrated, with SETUP's two models trained, registered and promoted.
    (folder, environment, the PostgreSQL database's name or None, {model: its serving form})"""
    var = Path(tempfile.mkdtemp(prefix=prefix))
    env = {
        **os.environ,
        "MLOPS_VAR_DIR": str(var),
        "DATABASE_URL": f"sqlite:///{var}/db.sqlite3",  # or a PostgreSQL database, below
        "MLFLOW_TRACKING_URI": f"sqlite:///{var}/mlflow.db",
        # As in production: DEBUG keeps every query in memory and costs the prediction log dearly.
        "DEBUG": "0",
        "SECRET_KEY": "bench-only-secret-key",
        "HTTPS_ONLY": "0",  # plain HTTP on localhost
        "SERVING_REQUIRE_AUTH": "0",
        "SERVING_THROTTLE_RATE": "1000000/second",
        "PREDICTION_LOG_FLUSH_SECONDS": str(FLUSH_SECONDS),
        "PROMETHEUS_MULTIPROC_DIR": str(var / "prometheus"),
        # mlflow models serve runs `uvicorn` from PATH: this interpreter's.
        "PATH": f"{Path(PYTHON).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("CELERY_BROKER_URL", None)
    database = None
    if postgres:
        env["DATABASE_URL"], database = _postgres_database(postgres)
    (var / "prometheus").mkdir()
    subprocess.run([PYTHON, "manage.py", "migrate", "-v", "0"], cwd=BASE, env=env, check=True)
    setup = subprocess.run(
        [PYTHON, "manage.py", "shell", "-c", SETUP], cwd=BASE, env=env, check=True, capture_output=True, text=True
    )
    forms = json.loads(next(line for line in setup.stdout.splitlines() if line.startswith("FORMS "))[6:])
    return var, env, database, forms


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one measurement")
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each server, taken in turns")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--models", default="iris-rf,iris-lr", help="which of iris-rf, iris-lr to measure")
    parser.add_argument("--batches", default="100,1000", help="batch sizes (rows a request) measured on the forest")
    parser.add_argument("--keep", action="store_true", help="keep the temporary store and logs")
    parser.add_argument(
        "--postgres",
        metavar="SERVER_URL",
        help="the store on this PostgreSQL server (a new database, dropped at the end), as in production, "
        "instead of SQLite: e.g. postgres://postgres@127.0.0.1:5432",
    )
    args = parser.parse_args()
    args.batches = [int(b) for b in args.batches.split(",") if b]

    var, env, database, forms = setup_store("mlops-bench-", args.postgres)
    print(f"store: {var}", file=sys.stderr)

    results = {}
    try:
        for model in args.models.split(","):
            results[model] = _measure_model(model, env, var, args, database)
    finally:
        if not args.keep:
            shutil.rmtree(var, ignore_errors=True)
        if database:
            _postgres_drop(args.postgres, database)

    print(
        f"\n{args.concurrency} keep-alive connections, {args.workers} workers per server, {os.cpu_count()} cores; "
        f"median of {args.rounds} turns of {args.seconds:g} s each; ours = serve.py (granian); "
        f"database: {'PostgreSQL' if args.postgres else 'SQLite'}\n"
    )
    print(
        f"{'model':<8} {'server':<31} {'req/s':>7} {'logged':>7} {'rows/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'errors':>6} {'drain s':>7} {'srv µs':>7} {'db µs':>6}   req/s of each turn"
    )
    for model, by_label in results.items():
        for label, r in by_label.items():
            turns = " ".join(f"{x:.0f}" for x in r["rps_all"])
            print(
                f"{model:<8} {label:<31} {r['rps']:>7.0f} {r['logged_rps']:>7.0f} {r['rows_per_s']:>9.0f}"
                f" {r['p50']:>8.2f} {r['p99']:>8.2f} {r['errors']:>6} {r['drained_s']:>7.2f}"
                f" {r['server_cpu_us']:>7.0f} {r['database_cpu_us']:>6.0f}   {turns}"
            )
    summary, checks = _summary(results, forms, args)
    print()
    for name, value, target, met in checks:
        print(f"{name:<52} {value:>8.2f}  target {target:<14} {'met' if met else 'NOT MET'}")
    print("\nSUMMARY " + json.dumps(summary))


if __name__ == "__main__":
    main()
