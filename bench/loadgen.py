"""A small HTTP load generator: N concurrent keep-alive connections posting the same JSON body.

asyncio and raw sockets, so that it costs the machine little beside the servers it measures
(reconnects when a server closes the connection, as gunicorn's sync workers do after each answer).
"""

import asyncio
import time
from urllib.parse import urlsplit


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
