"""Headless Chromium driven over the DevTools protocol (aiohttp's websocket client; no driver binary needed).

with Browser() as browser:
    browser.cookie("sessionid", key, url=live_server.url)
    page = browser.open(url, width=1280)      # the page's layout facts, its HTTP status and the errors it logged
    page = browser.open(url, width=1400, measure="({charts: ...})")   # or what a test measures itself
    browser.screenshot(path, full_page=True)
"""

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# What a page's layout says, measured in the page: the main table against its container and the window,
# and the elements taller than the window that should not be (headings, fieldsets' legends, buttons).
LAYOUT_JS = """
(() => {
  const doc = document.documentElement;
  const table = document.querySelector('#result_list') || document.querySelector('#content-main table');
  let overflow = 0;
  if (table) {
    const box = table.parentElement;
    overflow = Math.max(table.scrollWidth - box.clientWidth, table.getBoundingClientRect().right - doc.clientWidth);
  }
  const tall = [];
  for (const el of document.querySelectorAll('h1, h2, h3, legend, label, .submit-row, input, button, th')) {
    if (el.id === 'toggle-nav-sidebar') continue;  // the admin's full-height sidebar toggle, by design
    const r = el.getBoundingClientRect();
    if (r.height > Math.min(window.innerHeight, 400)) {
      tall.push(el.tagName + ' ' + (el.textContent || '').trim().slice(0, 40) + ' ' + Math.round(r.height) + 'px');
    }
  }
  return {
    title: document.title, table: !!table, overflow: Math.round(overflow),
    pageOverflow: doc.scrollWidth - doc.clientWidth, tall: tall,
    h1: (document.querySelector('h1') || {}).textContent || '',
  };
})()
"""


class Browser:
    def __init__(self, *, height=900, timeout=20):
        self.height = height
        self.timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._id = 0
        self.errors, self.status = [], None

    def __enter__(self):
        # Chromium's helper processes may still write to the profile for a moment after it exits.
        self._profile = tempfile.TemporaryDirectory(ignore_cleanup_errors=True)
        self._process = subprocess.Popen(
            [
                CHROMIUM,
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
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its renderer and helper processes in one group, stopped together
        )
        port = None
        deadline = time.monotonic() + self.timeout
        while port is None and time.monotonic() < deadline:
            line = self._process.stderr.readline()
            match = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            port = match and int(match.group(1))
        if port is None:
            self.__exit__()
            raise RuntimeError("chromium did not start")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            page = next(target for target in json.load(response) if target["type"] == "page")
        self._loop.run_until_complete(self._connect(page["webSocketDebuggerUrl"]))
        for domain in ("Page", "Network", "Runtime", "Log"):
            self._call(f"{domain}.enable")
        return self

    def __exit__(self, *exc):
        if getattr(self, "_ws", None) is not None:
            self._loop.run_until_complete(self._close())
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGTERM)
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
        self._loop.close()
        self._profile.cleanup()

    async def _connect(self, url):
        import aiohttp

        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(url, max_msg_size=0)

    async def _close(self):
        await self._ws.close()
        await self._session.close()

    async def _send(self, method, params, wait_event=None):
        self._id += 1
        mine = self._id
        await self._ws.send_str(json.dumps({"id": mine, "method": method, "params": params or {}}))
        result, seen_event = None, wait_event is None
        deadline = time.monotonic() + self.timeout
        while result is None or not seen_event:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{method}: no answer in {self.timeout} s")
            message = json.loads((await self._ws.receive(timeout=remaining)).data)
            if message.get("id") == mine:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result = message["result"]
            elif message.get("method") == wait_event:
                seen_event = True
            else:
                self._event(message)
        return result

    def _event(self, message):
        method, params = message.get("method"), message.get("params", {})
        if method == "Network.responseReceived" and params.get("type") == "Document":
            self.status = params["response"]["status"]
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            values = (str(argument.get("value", argument.get("description"))) for argument in params["args"])
            self.errors.append("console.error: " + " ".join(values))
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append("exception: " + details.get("exception", {}).get("description", details.get("text", "")))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.errors.append(f"log: {params['entry']['text']} {params['entry'].get('url', '')}")

    def _call(self, method, params=None, wait_event=None):
        return self._loop.run_until_complete(self._send(method, params, wait_event))

    def cookie(self, name, value, *, url):
        self._call("Network.setCookie", {"name": name, "value": value, "url": url})

    def _window(self, width, height):
        self._width = width
        self._call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def open(self, url, *, width, measure=LAYOUT_JS):
        """Load `url` in a window `width` px wide; returns what the JavaScript object expression `measure`
        finds (by default the layout facts), the page's HTTP status and the errors it logged."""
        self.errors, self.status = [], None
        self._window(width, self.height)
        self._call("Page.navigate", {"url": url}, wait_event="Page.loadEventFired")
        facts = self._call("Runtime.evaluate", {"expression": measure, "returnByValue": True})["result"]["value"]
        return {**facts, "status": self.status, "errors": list(self.errors)}

    def screenshot(self, path, *, full_page=False):
        """A PNG of the window, or of the whole page's height with `full_page`."""
        import base64

        if full_page:
            self._window(self._width, int(self.evaluate("document.documentElement.scrollHeight")))
        try:
            data = self._call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": full_page})["data"]
        finally:
            if full_page:
                self._window(self._width, self.height)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def evaluate(self, expression):
        """The value of a JavaScript expression in the page."""
        return self._call("Runtime.evaluate", {"expression": expression, "returnByValue": True})["result"].get("value")
