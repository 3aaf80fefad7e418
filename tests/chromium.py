"""Headless Chromium driven over the DevTools protocol (aiohttp's websocket client): open a page with a
session cookie, collect what went wrong (HTTP status, script exceptions, console errors, failed loads),
measure what a test asks, and save a full-page screenshot."""

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

BINARY = shutil.which("chromium") or "/usr/bin/chromium"


@dataclass
class PageVisit:
    url: str
    status: int | None = None
    errors: list = field(default_factory=list)
    measured: object = None


class Chromium:
    """One headless browser for a test; `visit` opens a page in its tab."""

    def __init__(self, *, width=1400, timeout=20):
        self.width, self.timeout = width, timeout

    def __enter__(self):
        self._profile = tempfile.TemporaryDirectory(prefix="chromium-")
        self._process = subprocess.Popen(
            [
                BINARY,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                f"--user-data-dir={self._profile.name}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = Path(self._profile.name) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline or self._process.poll() is not None:
                self.__exit__(None, None, None)
                raise RuntimeError("chromium did not start its DevTools endpoint")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as response:
            targets = json.load(response)
        self._page_ws = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        return self

    def __exit__(self, *exc):
        self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._profile.cleanup()

    def visit(self, url, *, cookies=None, measure="null", screenshot=None):
        """Open `url` (with `cookies`, {name: value}), evaluate the JavaScript expression `measure` once
        loaded, and save a full-page PNG to `screenshot`."""
        return asyncio.run(asyncio.wait_for(self._visit(url, cookies or {}, measure, screenshot), timeout=self.timeout))

    async def _visit(self, url, cookies, measure, screenshot):
        visit = PageVisit(url=url)
        counter = itertools.count(1)
        loaded = asyncio.Event()
        pending = {}

        async with aiohttp.ClientSession() as session, session.ws_connect(self._page_ws, max_msg_size=0) as ws:

            async def listen():
                async for message in ws:
                    data = json.loads(message.data)
                    if "id" in data:
                        pending.pop(data["id"]).set_result(data)
                        continue
                    method, params = data.get("method"), data.get("params", {})
                    if method == "Page.loadEventFired":
                        loaded.set()
                    elif method == "Network.responseReceived" and params.get("type") == "Document":
                        visit.status = params["response"]["status"]
                    elif method == "Runtime.exceptionThrown":
                        visit.errors.append(params["exceptionDetails"].get("text", "exception"))
                    elif (
                        method == "Log.entryAdded"
                        and params["entry"]["level"] == "error"
                        # The browser asks for /favicon.ico by itself; the page never does.
                        and not params["entry"].get("url", "").endswith("/favicon.ico")
                    ):
                        visit.errors.append(params["entry"]["text"] + " " + params["entry"].get("url", ""))
                    elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                        visit.errors.append(" ".join(str(a.get("value")) for a in params.get("args", [])))

            async def call(method, **params):
                number = next(counter)
                pending[number] = asyncio.get_running_loop().create_future()
                await ws.send_json({"id": number, "method": method, "params": params})
                reply = await pending[number]
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

            listener = asyncio.create_task(listen())
            try:
                for domain in ("Page", "Network", "Runtime", "Log"):
                    await call(f"{domain}.enable")
                for name, value in cookies.items():
                    await call("Network.setCookie", name=name, value=value, url=url)
                await call(
                    "Emulation.setDeviceMetricsOverride",
                    width=self.width,
                    height=900,
                    deviceScaleFactor=1,
                    mobile=False,
                )
                await call("Page.navigate", url=url)
                await loaded.wait()
                result = await call("Runtime.evaluate", expression=f"JSON.stringify({measure})", returnByValue=True)
                visit.measured = json.loads(result["result"].get("value") or "null")
                if screenshot:
                    height = await call(
                        "Runtime.evaluate", expression="document.documentElement.scrollHeight", returnByValue=True
                    )
                    await call(
                        "Emulation.setDeviceMetricsOverride",
                        width=self.width,
                        height=int(height["result"]["value"]),
                        deviceScaleFactor=1,
                        mobile=False,
                    )
                    shot = await call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
                    Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
                    Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
            finally:
                listener.cancel()
        return visit
