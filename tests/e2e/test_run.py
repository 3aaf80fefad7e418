"""`make run` and `make mlflow-ui` as a user runs them (run.py), stopped as a terminal's Ctrl-C stops them."""

import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e import processes


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (ConnectionError, urllib.error.URLError, TimeoutError):
        return None


def _ctrl_c(process, timeout):
    """A terminal's Ctrl-C: SIGINT to run.py's foreground process group (its children live in their own)."""
    os.killpg(process.pid, signal.SIGINT)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"still running {timeout} s after Ctrl-C:\n{process.log.read_text()[-4000:]}")


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_make_run_starts_web_worker_and_beat_on_the_port_asked_and_ctrl_c_stops_them_cleanly(tmp_path):
    port = _free_port()
    processes.purge_queues()  # its worker shares the configured broker: only what it queues should run
    process = processes.start(
        "run",
        "--port",
        str(port),
        log=tmp_path / "run.log",
        PATH=f"{processes.BASE_DIR / '.venv' / 'bin'}:{os.environ['PATH']}",
        WEB_HOST="127.0.0.1",
        WEB_WORKERS="1",
        DEBUG="1",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),
        MLOPS_VAR_DIR=str(tmp_path / "var"),
    )
    (tmp_path / "prometheus").mkdir()
    log = process.log
    processes.wait_for(
        lambda: _answers(f"http://127.0.0.1:{port}/admin/login/") == 200, timeout=60, process=process, what="web"
    )
    processes.wait_for(lambda: "ready." in log.read_text(), timeout=60, process=process, what="the worker")
    processes.wait_for(lambda: "beat: Starting" in log.read_text(), timeout=60, process=process, what="beat")
    children = _all_descendants(process.pid)
    assert len(children) >= 3

    assert _ctrl_c(process, timeout=45) == 0
    output = log.read_text()
    for name in ("web", "worker", "beat"):
        assert f"{name} stopped (rc=0)" in output, output[-3000:]
    assert "stopped cleanly: web, worker, beat" in output
    assert "Warm shutdown" in output
    for noise in ("SIGKILL", "signal 15", "exited with", "No hostname was supplied", "Traceback"):
        assert noise not in output, f"{noise!r} in:\n{output[-3000:]}"
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists() and not _zombie(pid)]


@pytest.mark.mlflow
def test_make_mlflow_ui_leaves_no_process_behind(tmp_path):
    port = _free_port()
    process = processes.start(
        "run",
        "mlflow-ui",
        "--store",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--port",
        str(port),
        log=tmp_path / "mlflow-ui.log",
        PATH=f"{processes.BASE_DIR / '.venv' / 'bin'}:{os.environ['PATH']}",
    )
    processes.wait_for(
        lambda: _answers(f"http://127.0.0.1:{port}/health") == 200, timeout=90, process=process, what="MLflow UI"
    )
    children = _all_descendants(process.pid)
    assert children, "mlflow ui runs in a child process"
    assert not any("huey" in _cmdline(pid) for pid in children), "MLflow's job runner is not started"

    assert _ctrl_c(process, timeout=45) == 0
    assert "stopped cleanly: mlflow" in process.log.read_text()
    left = [pid for pid in children if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
    assert not left, [_cmdline(pid) for pid in left]


def _all_descendants(root):
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _zombie(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def _cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def test_the_makefile_starts_run_py_on_the_port_asked_and_mlflow_ui_through_it():
    run = subprocess.run(
        ["make", "-n", "run", "PORT=8123"], cwd=processes.BASE_DIR, capture_output=True, text=True, check=True
    ).stdout
    assert "setup_demo --url http://127.0.0.1:8123" in run
    assert "run.py --port 8123" in run
    assert "honcho start" not in run
    ui = subprocess.run(["make", "-n", "mlflow-ui"], cwd=processes.BASE_DIR, capture_output=True, text=True, check=True)
    assert "run.py mlflow-ui --store" in ui.stdout
