"""gunicorn settings for the web processes: Prometheus multiprocess mode and a prediction log that
is flushed when a worker stops. `gunicorn -c gunicorn.conf.py mlops_site.wsgi` (the Dockerfile does)."""

import os
import shutil
import tempfile

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
# gthread keeps client connections alive (the sync worker closes each after one answer, so every
# request would pay a TCP handshake); one thread per worker, as predictions hold the GIL anyway.
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
threads = 1
keepalive = 30
# Each worker listens on its own SO_REUSEPORT socket and the kernel spreads new connections over
# them. On one shared socket the first worker to wake accepts a whole burst of keep-alive
# connections (a client's pool, a proxy's upstream) and serves them alone while the others idle:
# half the throughput with two workers. The cost: a second server started on the same port shares
# it instead of failing, so stop the old one first.
reuse_port = os.environ.get("GUNICORN_REUSE_PORT", "1") == "1"
timeout = 60
graceful_timeout = 30
# The workers' heartbeat files in memory, as gunicorn's FAQ advises: on a disk-backed /tmp (a
# container's overlay) the heartbeat's fchmod can block a worker for as long as the disk is busy.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None


def on_starting(server):
    # Each worker writes its metrics to files here; /metrics adds them up. Wiped at start: stale
    # files of dead processes would otherwise count forever.
    directory = os.environ.setdefault(
        "PROMETHEUS_MULTIPROC_DIR", os.path.join(tempfile.gettempdir(), f"mlops-prometheus-{os.getpid()}")
    )
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory, exist_ok=True)


def worker_exit(server, worker):
    # A graceful stop (SIGTERM, a max_requests restart) writes the queued prediction log rows first.
    from serving.predlog import writer

    writer.close()


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
