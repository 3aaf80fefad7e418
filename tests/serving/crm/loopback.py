"""A CRM on the loopback that speaks the connector's REST contract (README, "CRM"), with the faults a
real one has: 5xx answers, an answer lost after the write, slowness, and being down."""

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit


class LoopbackCrm:
    def __init__(self, customers, *, token="crm-secret"):
        self.customers = {cid: {"features": dict(f), "segment": "", "updated_at": 0.0} for cid, f in customers.items()}
        self.token = token
        self.faults = []  # popped one per request: a status code, "lost" (write, then 502), or ("slow", seconds)
        self.delay = 0.0  # every answer waits this long
        self.requests = []  # (method, path, Idempotency-Key)
        self.keys = {}  # Idempotency-Key -> the answer given the first time
        self.writes = Counter()  # customer id -> segment writes applied
        # After this many writes the CRM goes down for writes: the next one is applied but its answer
        # lost (502), every later one is a 503, until this is set back to None.
        self.outage_after_writes = None
        self._outage_lost = False
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def count(self, method, prefix=""):
        return sum(1 for m, path, _ in self.requests if m == method and path.startswith(prefix))

    def _handler(crm):  # noqa: N805  (the handler class closes over the CRM)
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self, status, body=None):
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _fault(self):
                # The body is read first, whatever the answer, so the keep-alive connection stays in step.
                self.body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with crm.lock:
                    crm.requests.append((self.command, self.path, self.headers.get("Idempotency-Key")))
                    fault = crm.faults.pop(0) if crm.faults else None
                wait = crm.delay + (fault[1] if isinstance(fault, tuple) else 0)
                if wait:
                    time.sleep(wait)
                if self.headers.get("Authorization") != f"Bearer {crm.token}":
                    self._answer(401, {"error": "bad token"})
                    return "answered"
                if isinstance(fault, int):
                    self._answer(fault, {"error": "injected"})
                    return "answered"
                return fault if fault == "lost" else None

            def do_GET(self):
                if self._fault() == "answered":
                    return
                url = urlsplit(self.path)
                if url.path.startswith("/customers/"):
                    customer_id = unquote(url.path[len("/customers/") :])
                    customer = crm.customers.get(customer_id)
                    if customer is None:
                        return self._answer(404, {"error": f"no customer {customer_id}"})
                    return self._answer(200, self._record(customer_id, customer))
                if url.path == "/customers":
                    query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
                    after, limit = query.get("after", ""), int(query.get("limit", "100"))
                    ids = sorted(cid for cid in crm.customers if cid > after)
                    page = [self._record(cid, crm.customers[cid]) for cid in ids[:limit]]
                    return self._answer(200, {"customers": page, "total": len(crm.customers)})
                return self._answer(404, {"error": "no such endpoint"})

            def do_PUT(self):
                fault = self._fault()
                if fault == "answered":
                    return
                body = json.loads(self.body or b"{}")
                url = urlsplit(self.path)
                customer_id = unquote(url.path[len("/customers/") : -len("/segment")])
                key = self.headers.get("Idempotency-Key")
                if not key:
                    return self._answer(400, {"error": "every write needs an Idempotency-Key"})
                with crm.lock:
                    if crm.outage_after_writes is not None and sum(crm.writes.values()) >= crm.outage_after_writes:
                        if crm._outage_lost:
                            return self._answer(503, {"error": "down for maintenance"})
                        crm._outage_lost = True
                        fault = "lost"
                    if key in crm.keys:
                        status, answer = crm.keys[key]
                    elif customer_id not in crm.customers:
                        status, answer = 404, {"error": f"no customer {customer_id}"}
                    else:
                        crm.customers[customer_id]["segment"] = body["segment"]
                        crm.writes[customer_id] += 1
                        status, answer = 200, {"customer_id": customer_id, "segment": body["segment"]}
                        crm.keys[key] = (status, answer)
                if fault == "lost":
                    return self._answer(502, {"error": "the answer was lost"})
                return self._answer(status, answer)

            @staticmethod
            def _record(customer_id, customer):
                return {"customer_id": customer_id, "features": customer["features"], "segment": customer["segment"]}

        return Handler
