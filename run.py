"""`make run`'s process manager: the Procfile's web, worker and beat in one terminal, stopped cleanly by Ctrl-C.

    python run.py [--port 8000] [--procfile Procfile]     # `make run`
    python run.py mlflow-ui --store URI [--port 5000]      # `make mlflow-ui`

honcho's own `start` stops a process by sending SIGTERM to its whole process group, so Celery's pool children
are killed under their parent ("Process 'ForkPoolWorker-1' exited with 'signal 15 (SIGTERM)'"), and it sends
SIGKILL to whatever still runs 5 seconds later (a worker finishing its task). Here every process is started
with `exec` (so the pid honcho knows is the program, not a shell), the stop signal goes to that pid alone (the
worker stops its pool itself: Celery's warm shutdown lets running tasks finish), and only a process still
alive STOP_TIMEOUT seconds (default 30) later is killed, with its children.

`mlflow ui` is stopped the way a terminal's Ctrl-C stops it, SIGINT to its whole group (uvicorn and its
workers); a SIGTERM to its main process alone leaves it and its children running. Its job runner (seven huey
consumer processes, for MLflow's GenAI server jobs, which we do not use) is not started at all.
"""

import argparse
import errno
import os
import shlex
import signal
import sys
from pathlib import Path

from honcho import manager as honcho_manager
from honcho.environ import expand_processes, parse_procfile

STOP_TIMEOUT = int(os.environ.get("STOP_TIMEOUT") or 30)


class _LeaderSignals:
    """honcho's ProcessManager, with SIGTERM sent to the process alone (SIGINT to the group for the
    processes in `interrupt_group`) and SIGKILL to its group."""

    def __init__(self, interrupt_group=False):
        self.interrupt_group = interrupt_group

    def terminate(self, pid):
        if self.interrupt_group:
            self._send(os.killpg, pid, signal.SIGINT)
        else:
            self._send(os.kill, pid, signal.SIGTERM)

    def kill(self, pid):
        self._send(os.killpg, pid, signal.SIGKILL)

    @staticmethod
    def _send(how, pid, signum):
        try:
            how(pid, signum)
        except OSError as error:
            if error.errno not in (errno.EPERM, errno.ESRCH):
                raise


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="?", choices=("procfile", "mlflow-ui"), default="procfile")
    parser.add_argument("--port", type=int, default=None, help="web: PORT or 8000; mlflow-ui: 5000")
    parser.add_argument("--procfile", default=str(Path(__file__).with_name("Procfile")))
    parser.add_argument("--store", help="mlflow-ui: the MLflow backend store URI")
    args = parser.parse_args(argv)

    honcho_manager.KILL_WAIT = STOP_TIMEOUT
    manager = honcho_manager.Manager()
    env = dict(os.environ)
    if args.what == "mlflow-ui":
        if not args.store:
            parser.error("mlflow-ui needs --store")
        manager._procmgr = _LeaderSignals(interrupt_group=True)
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        port = args.port or 5000
        command = ["mlflow", "ui", "--backend-store-uri", args.store, "--host", "127.0.0.1", "--port", port]
        manager.add_process("mlflow", "exec " + shlex.join(map(str, command)), env=env)
    else:
        manager._procmgr = _LeaderSignals()
        procfile = parse_procfile(Path(args.procfile).read_text())
        port = args.port or int(env.get("PORT") or 8000)
        for process in expand_processes(procfile.processes, env=env, port=port):
            # web listens on the port; honcho gives the others port + 100, + 200, which they do not use
            manager.add_process(process.name.split(".")[0], f"exec {process.cmd}", env=process.env)
    manager.loop()
    stopped = {name: info.get("returncode") for name, info in manager._processes.items()}
    if manager.returncode in (130, 143) and all(code == 0 for code in stopped.values()):
        print(f"stopped cleanly: {', '.join(stopped)}", flush=True)
        return 0
    return manager.returncode


if __name__ == "__main__":
    sys.exit(main())
