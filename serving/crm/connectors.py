"""The CRM behind one connector: our own customer table, or an external CRM over HTTP.

`connector_get()` picks one from the settings: CRM_URL unset → the embedded table; set → the HTTP
contract below (README, "CRM"), spoken with httpx:

    GET  /customers/{id}                         → {"customer_id", "features": {...}, "segment"}; 404 unknown
    GET  /customers?after=ID&limit=N[&updated_since=ISO-8601]
                                                 → {"customers": [...], "total": N?}, ordered by customer_id
    PUT  /customers/{id}/segment  Idempotency-Key: K
         {"segment", "previous", "model", "model_version", "request_id"}
                                                 → 2xx; a key seen before is not written again
"""

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Protocol
from urllib.parse import quote

import httpx
from django.conf import settings
from django.utils import timezone

from core.errors import ApplicationError, NotFound
from serving.crm.models import Customer

logger = logging.getLogger("serving.crm")


class CrmUnavailable(ApplicationError):
    """The CRM could not be reached, or kept failing, after the retries; nothing was written."""

    status_code = 503


@dataclass(frozen=True)
class CustomerRecord:
    customer_id: str
    features: dict
    segment: str


@dataclass(frozen=True)
class SegmentWrite:
    customer_id: str
    segment: str
    previous: str
    model_name: str
    model_version: int
    request_id: str
    idempotency_key: str
    set_by: str


class CrmConnector(Protocol):
    """What the services need of a CRM."""

    kind: str
    # True when writes join the caller's database transaction (the embedded table): a chunk's writes,
    # its history and the job's progress then commit together.
    transactional: bool
    page_size: int

    def customer_get(self, customer_id: str) -> CustomerRecord: ...

    def customers_page(
        self, *, after: str, limit: int, updated_since: datetime | None = None
    ) -> list[CustomerRecord]: ...

    def customers_count(self, *, updated_since: datetime | None = None) -> int | None: ...

    def segment_write(self, write: SegmentWrite, *, batch: bool = False) -> None: ...

    def segments_write(self, writes: list[SegmentWrite]) -> None: ...


def _unknown(customer_id):
    return NotFound(f"customer {customer_id!r} does not exist in the CRM", field="customer_id")


class EmbeddedConnector:
    """The CRM as a table of ours (serving.Customer): the default, seeded by `make run`."""

    kind = "embedded"
    transactional = True

    def __init__(self, *, page_size):
        self.page_size = page_size

    def customer_get(self, customer_id):
        row = Customer.objects.filter(customer_id=customer_id).values_list("customer_id", "features", "segment").first()
        if row is None:
            raise _unknown(customer_id)
        return CustomerRecord(*row)

    def _scope(self, updated_since):
        customers = Customer.objects.all()
        return customers.filter(features_updated_at__gte=updated_since) if updated_since else customers

    def customers_page(self, *, after, limit, updated_since=None):
        customers = self._scope(updated_since)
        if after:
            customers = customers.filter(customer_id__gt=after)
        rows = customers.order_by("customer_id").values_list("customer_id", "features", "segment")[:limit]
        return [CustomerRecord(*row) for row in rows]

    def customers_count(self, *, updated_since=None):
        return self._scope(updated_since).count()

    def segment_write(self, write, *, batch=False):
        if not self._update([write.customer_id], write, timezone.now()):
            raise _unknown(write.customer_id)

    def segments_write(self, writes):
        """One UPDATE per segment written (a chunk's writes share their prediction's request and version)."""
        now = timezone.now()
        groups = {}
        for write in writes:
            key = (write.segment, write.model_name, write.model_version, write.request_id, write.set_by)
            groups.setdefault(key, (write, []))[1].append(write.customer_id)
        for write, ids in groups.values():
            self._update(ids, write, now)

    @staticmethod
    def _update(ids, write, now):
        return Customer.objects.filter(customer_id__in=ids).update(
            segment=write.segment,
            segment_model=write.model_name,
            segment_version=write.model_version,
            segment_set_at=now,
            segment_request_id=write.request_id,
            segment_set_by=write.set_by[:150],
        )


class _Rate:
    """At most `per_second` calls a second, spread evenly (the batch job's bound on an external CRM)."""

    def __init__(self, per_second):
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self.next_at = 0.0
        self.lock = threading.Lock()

    def wait(self):
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            at = max(now, self.next_at)
            self.next_at = at + self.interval
        if at > now:
            time.sleep(at - now)


class HttpConnector:
    """An external CRM speaking the small REST contract above, over httpx.

    Every call has a timeout; 5xx answers, 429 and connection errors (refused, reset, timed out) are
    retried with exponential backoff; each segment write carries an Idempotency-Key, the same on its
    retries, so a write the CRM received but whose answer was lost is not applied twice. The batch
    job's calls are spread to at most CRM_RATE_LIMIT a second.
    """

    kind = "http"
    transactional = False

    def __init__(self, *, base_url, token, timeout, retries, backoff, rate, page_size):
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self.page_size = page_size
        self.rate = _Rate(rate)
        headers = {"Accept": "application/json", "User-Agent": "mlops-site-crm/1"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.client = httpx.Client(base_url=self.base_url, headers=headers, timeout=httpx.Timeout(timeout))

    def _call(self, method, path, *, batch=False, **kwargs):
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            if batch:
                self.rate.wait()
            try:
                response = self.client.request(method, path, **kwargs)
            except httpx.TimeoutException as exc:
                last = f"timed out ({type(exc).__name__})"
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 500 and response.status_code != 429:
                    return response
                last = f"answered {response.status_code} {response.reason_phrase}"
            logger.warning("crm %s %s attempt %d of %d: %s", method, path, attempt + 1, self.retries + 1, last)
        raise CrmUnavailable(f"the CRM at {self.base_url} is unreachable: {last} (after {self.retries + 1} attempts)")

    def _json(self, response, what):
        if response.status_code >= 400:
            raise CrmUnavailable(f"the CRM refused {what}: {response.status_code} {response.text[:200]}")
        try:
            return response.json()
        except ValueError:
            raise CrmUnavailable(f"the CRM answered {what} with something that is not JSON") from None

    @staticmethod
    def _record(item, what):
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("customer_id"), str)
            or not isinstance(item.get("features"), dict)
        ):
            raise CrmUnavailable(f"the CRM's {what} is not a customer (customer_id, features, segment)")
        return CustomerRecord(item["customer_id"], item["features"], item.get("segment") or "")

    def customer_get(self, customer_id):
        response = self._call("GET", f"/customers/{quote(customer_id, safe='')}")
        if response.status_code == 404:
            raise _unknown(customer_id)
        return self._record(self._json(response, f"customer {customer_id}"), f"customer {customer_id}")

    def _page(self, *, after, limit, updated_since, batch):
        params = {"after": after or "", "limit": limit}
        if updated_since is not None:
            params["updated_since"] = updated_since.isoformat()
        body = self._json(self._call("GET", "/customers", params=params, batch=batch), "the customer list")
        if not isinstance(body, dict) or not isinstance(body.get("customers"), list):
            raise CrmUnavailable('the CRM\'s customer list is not {"customers": [...]}')
        return body

    def customers_page(self, *, after, limit, updated_since=None):
        body = self._page(after=after, limit=limit, updated_since=updated_since, batch=True)
        return [self._record(item, "customer list entry") for item in body["customers"]]

    def customers_count(self, *, updated_since=None):
        total = self._page(after="", limit=1, updated_since=updated_since, batch=True).get("total")
        return total if isinstance(total, int) and not isinstance(total, bool) and total >= 0 else None

    def segment_write(self, write, *, batch=False):
        response = self._call(
            "PUT",
            f"/customers/{quote(write.customer_id, safe='')}/segment",
            json={
                "segment": write.segment,
                "previous": write.previous,
                "model": write.model_name,
                "model_version": write.model_version,
                "request_id": write.request_id,
            },
            headers={"Idempotency-Key": write.idempotency_key},
            batch=batch,
        )
        if response.status_code == 404:
            raise _unknown(write.customer_id)
        if response.status_code >= 400:
            raise CrmUnavailable(
                f"the CRM refused the segment of {write.customer_id}: {response.status_code} {response.text[:200]}"
            )

    def segments_write(self, writes):
        for write in writes:
            self.segment_write(write, batch=True)


@lru_cache(maxsize=4)
def _connector(url, token, timeout, retries, backoff, rate, page_size, batch_size):
    if not url:
        return EmbeddedConnector(page_size=batch_size)
    return HttpConnector(
        base_url=url, token=token, timeout=timeout, retries=retries, backoff=backoff, rate=rate, page_size=page_size
    )


def connector_get() -> CrmConnector:
    """The CRM the settings name (one per process, so the HTTP connection pool is kept)."""
    return _connector(
        settings.CRM_URL,
        settings.CRM_TOKEN,
        settings.CRM_TIMEOUT_SECONDS,
        settings.CRM_RETRIES,
        settings.CRM_RETRY_BACKOFF_SECONDS,
        settings.CRM_RATE_LIMIT,
        settings.CRM_HTTP_PAGE_SIZE,
        settings.CRM_BATCH_SIZE,
    )
