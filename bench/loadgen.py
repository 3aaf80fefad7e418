"""An HTTP load generator: N concurrent keep-alive connections posting the same JSON body.

wrk (Debian's package `wrk`, C, one thread a core) when it is installed: it costs the machine a
fraction of what a Python client does beside the servers it measures, on the same two cores. Without
it (or with LOADGEN=python), a small asyncio client on raw sockets (which reconnects when a server
closes the connection, as gunicorn's sync workers do after each answer).
"""

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from urllib.parse import urlsplit

WRK = None if os.environ.get("LOADGEN") == "python" else shutil.which("wrk")

# wrk reports through a Lua script: the request to send, then one line of figures at the end.
_WRK_SCRIPT = """
local f = io.open(os.getenv("LOADGEN_BODY"), "rb")
wrk.body = f:read("*a")
f:close()
wrk.method = os.getenv("LOADGEN_METHOD")
if wrk.method == "POST" then wrk.headers["Content-Type"] = "application/json" end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("LOADGEN %d %d %d %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.connect, e.read, e.write, e.status, e.timeout))
end
"""


async def _one_connection(host, port, request, deadline, latencies, errors):
    reader = writer = None
    while time.perf_counter() < deadline:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            started = time.perf_counter()
            writer.write(request)
            await writer.drain()
            status_line = await reader.readline()
            if not status_line:
                raise ConnectionError("closed")
            length, close = 0, False
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "connection" and "close" in value.lower():
                    close = True
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if b" 200 " not in status_line:
                errors.append(status_line.decode().strip())
            if close:
                writer.close()
                writer = None
        except (ConnectionError, asyncio.IncompleteReadError, OSError) as exc:
            errors.append(type(exc).__name__)
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


def run(url, body, *, concurrency=16, seconds=10.0, headers=None, method="POST"):
    """Drive `url` for `seconds` (a GET when `method` says so); returns (requests per second, p50 ms,
    p99 ms, errors)."""
    if WRK and seconds >= 1 and not headers:
        return _wrk(url, body, concurrency=concurrency, seconds=seconds, method=method)
    parts = urlsplit(url)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    content = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n" if method == "POST" else ""
    request = (
        f"{method} {parts.path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n{content}{extra}\r\n"
    ).encode() + (body if method == "POST" else b"")
    latencies, errors = [], []

    async def main():
        deadline = time.perf_counter() + seconds
        await asyncio.gather(
            *(
                _one_connection(parts.hostname, parts.port, request, deadline, latencies, errors)
                for _ in range(concurrency)
            )
        )

    started = time.perf_counter()
    asyncio.run(main())
    elapsed = time.perf_counter() - started
    latencies.sort()
    if not latencies:
        return 0.0, float("nan"), float("nan"), errors
    return (
        len(latencies) / elapsed,
        latencies[len(latencies) // 2] * 1000,
        latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        errors,
    )


def _wrk(url, body, *, concurrency, seconds, method):
    with tempfile.TemporaryDirectory(prefix="loadgen-") as scratch:
        script, body_file = os.path.join(scratch, "run.lua"), os.path.join(scratch, "body")
        with open(script, "w") as out:
            out.write(_WRK_SCRIPT)
        with open(body_file, "wb") as out:
            out.write(body if method == "POST" else b"")
        threads = max(1, min(concurrency, os.cpu_count() or 1))
        output = subprocess.run(
            [WRK, "-t", str(threads), "-c", str(concurrency), "-d", f"{seconds:g}s", "--timeout", "30s"]
            + ["-s", script, url],
            env={**os.environ, "LOADGEN_BODY": body_file, "LOADGEN_METHOD": method},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    line = next(line for line in output.splitlines() if line.startswith("LOADGEN "))
    requests, duration_us, p50_us, p99_us, *errors = (int(x) for x in line.split()[1:])
    kinds = ("connect", "read", "write", "status", "timeout")
    failures = [kind for kind, count in zip(kinds, errors, strict=True) for _ in range(count)]
    ok = requests - errors[3]
    return ok / (duration_us / 1e6), p50_us / 1000, p99_us / 1000, failures
