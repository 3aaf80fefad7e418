"""The production web server: granian serving the Django app over WSGI, with the project's configuration.

    python serve.py            # `make serve`; the Dockerfile, compose and the Procfile run the same

Environment: PORT (8000), WEB_HOST (0.0.0.0), WEB_WORKERS (2: one per core suits predictions, which
hold the GIL), WEB_BLOCKING_THREADS (1 Python thread per worker), WEB_MAX_CONNECTIONS (1,024 per
worker), FORWARDED_ALLOW_IPS (127.0.0.1: the proxies whose X-Forwarded-For / X-Forwarded-Proto are
believed), WEB_GRACEFUL_TIMEOUT (30 s), and DEBUG (off unless set); .env.example lists the rest.
Chosen over gunicorn by measurement (README, "Serving" → "The web server").

What gunicorn.conf.py did with hooks is done here:
- Prometheus multiprocess mode: PROMETHEUS_MULTIPROC_DIR is set and wiped before the workers start,
  and each new worker marks the files of dead workers' live gauges dead (gunicorn's child_exit did);
- the prediction log is flushed when a worker stops (SIGTERM to the server, SIGHUP's graceful
  respawn, a crashed worker's replacement starting): a multiprocessing finaliser runs as the worker
  process ends, where atexit would not (granian's workers are forked processes that end with _exit).
Connections: on Linux every granian worker listens on its own SO_REUSEPORT socket, so the kernel
spreads keep-alive connections over the workers; connections are held by the Rust runtime, so idle
or slow clients hold no Python thread, and a request reaches Python only once it has fully arrived.
"""

import gc
import multiprocessing.util
import os
import shutil
import tempfile
import threading

from granian import Granian
from granian.constants import Interfaces


def _env_int(name, default):
    return int(os.environ.get(name) or default)


def _mark_dead_workers_metrics():
    """Live gauges of worker processes that are gone stop counting (gunicorn's child_exit did this)."""
    from prometheus_client import multiprocess

    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    pids = set()
    for name in os.listdir(directory):
        if name.startswith("gauge_live") and name.endswith(".db"):
            pids.add(int(name[:-3].rsplit("_", 1)[1]))
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, directory)
        except PermissionError:
            pass  # alive, someone else's


def _django_application():
    from granian.utils.proxies import wrap_wsgi_with_proxy_headers

    from serving.predlog import writer
    from serving.wsgi import application_build

    application = application_build()

    # Runs when the worker process ends after a graceful stop, before its final _exit.
    multiprocessing.util.Finalize(writer, writer.flush, exitpriority=100)
    _mark_dead_workers_metrics()
    # What importing Django and the apps made lives as long as the worker: out of the collector's sight,
    # a full collection no longer walks it (it took milliseconds, every so many allocations).
    gc.freeze()
    trusted = [host.strip() for host in os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1").split(",") if host.strip()]
    return wrap_wsgi_with_proxy_headers(application, trusted_hosts=trusted)


def load_application(target):
    """Runs in each worker: returns at once, so the worker listens within milliseconds, while Django
    loads in a thread; requests that arrive meanwhile wait for it instead of being refused.

    This matters at a graceful reload (SIGHUP): granian starts a new worker, then stops the old one
    respawn-interval later, and on Linux every worker has its own listening socket. A new worker that
    loaded Django before listening could still be loading when the old one closed its socket, and a
    moment with no socket listening refuses connections."""
    loading = threading.Thread(target=_load_into, args=(_loaded,), name="load-django", daemon=True)
    loading.start()

    def application(environ, start_response):
        app = _loaded.get("app")
        if app is None:
            loading.join()
            if "error" in _loaded:
                raise _loaded["error"]
            app = _loaded["app"]
        return app(environ, start_response)

    return application


_loaded = {}


def _load_into(holder):
    try:
        holder["app"] = _django_application()
    except BaseException as exc:  # shown on every request, and in the log
        holder["error"] = exc
        raise


def _prepare_metrics_dir():
    # Each worker writes its metrics to files here and /metrics adds them up. A directory of our own is
    # wiped at start: stale files of processes from an earlier run would otherwise count forever. One
    # given to us is shared with other processes (`make run` gives web, worker and beat one): whoever
    # starts them all wipes it first, so a worker that started before us keeps its files.
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        directory = os.path.join(tempfile.gettempdir(), f"mlops-prometheus-{os.getpid()}")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mlops_site.settings")
    os.environ.setdefault("DEBUG", "0")
    _prepare_metrics_dir()
    workers = _env_int("WEB_WORKERS", 2)
    server = Granian(
        "serving.wsgi:application_build",  # what load_application loads
        address=os.environ.get("WEB_HOST", "0.0.0.0"),  # noqa: S104  (a container's port is published)
        port=_env_int("PORT", 8000),
        interface=Interfaces.WSGI,
        workers=workers,
        # One Python thread per worker runs requests, as gthread with one thread did: predictions hold
        # the GIL, and more threads only take turns at it (measured with bench/serving.py).
        blocking_threads=_env_int("WEB_BLOCKING_THREADS", 1),
        runtime_threads=_env_int("WEB_RUNTIME_THREADS", 1),  # Rust's I/O threads a worker
        # Connections a worker holds at once (granian's "backpressure": a permit per connection, kept
        # while it is open, idle or not). Held by Rust, they cost no Python thread, so the number is
        # high: 200 idle clients must not use them up (at 64 they did, and serving stopped).
        backpressure=_env_int("WEB_MAX_CONNECTIONS", 1024),
        backlog=_env_int("WEB_BACKLOG", 2048),
        http="1",
        websockets=False,
        log_access=os.environ.get("WEB_ACCESS_LOG", "0") == "1",
        respawn_failed_workers=True,
        # SIGTERM / SIGHUP: a worker finishes its requests and writes its log first; this long at most.
        workers_kill_timeout=_env_int("WEB_GRACEFUL_TIMEOUT", 30),
        respawn_interval=float(os.environ.get("WEB_RESPAWN_INTERVAL", "1")),
        pid_file=None,
    )
    server.serve(target_loader=load_application)


if __name__ == "__main__":
    main()
