"""Every customer's segment: refresh jobs that walk the CRM in chunks, stop, resume and take over."""

import csv
import io
import logging
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import timedelta
from operator import attrgetter
from typing import TYPE_CHECKING

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from core.errors import ApplicationError, BrokerUnavailable, Conflict, InvalidInput, NotFound
from core.permissions import permission_require
from governance.models import AuditAction
from governance.services import audit_record
from serving.crm.connectors import SegmentWrite, connector_get
from serving.crm.models import CrmRefresh, CrmSettings, SegmentChange
from serving.crm.prediction import ServingFeatures, columns_predict, serving_features_get
from serving.crm.selectors import SETTINGS_PK, crm_settings_get, refresh_last_finished
from serving.crm.services.common import (
    SYSTEM_ACTOR,
    Superseded,
    UpdateStatus,
    columns_checked,
    mapping_for,
    updates_count,
)

if TYPE_CHECKING:
    from core.permissions import Actor

logger = logging.getLogger("serving.crm")

_FAILURES_KEPT = 20


def _is_dead(refresh, now=None):
    """A queued or running refresh whose worker went quiet for CRM_REFRESH_HEARTBEAT_TIMEOUT."""
    if refresh.status not in CrmRefresh.ACTIVE:
        return False
    limit = (now or timezone.now()) - timedelta(seconds=settings.CRM_REFRESH_HEARTBEAT_TIMEOUT)
    return (refresh.heartbeat_at or refresh.created_at) < limit


def _scope_decide(*, scope, model_name, wanted: ServingFeatures, config):
    """(scope, since, note): "changed" reads only customers changed since the last finished refresh,
    unless the model's version or the mapping changed since, which every segment depends on."""
    if scope == CrmRefresh.Scope.ALL:
        return CrmRefresh.Scope.ALL, None, "every customer, as asked"
    last = refresh_last_finished(model_name=model_name)
    if last is None or last.started_at is None:
        return CrmRefresh.Scope.ALL, None, "every customer: no refresh finished before"
    if last.model_version != wanted.primary_version:
        return (
            CrmRefresh.Scope.ALL,
            None,
            f"every customer: {model_name} v{wanted.primary_version} replaced v{last.model_version}",
        )
    if last.mapping != config.mapping:
        return CrmRefresh.Scope.ALL, None, "every customer: the mapping changed since the last refresh"
    return CrmRefresh.Scope.CHANGED, last.started_at, f"customers changed since refresh #{last.pk} started"


def _refresh_create(*, scope, by, actor_name, inline):
    if scope not in CrmRefresh.Scope.values:
        raise InvalidInput(f"must be one of {', '.join(CrmRefresh.Scope.values)}", field="scope")
    config = crm_settings_get()
    wanted = serving_features_get(model_name=config.model_name)
    with transaction.atomic():
        # The settings row serialises starts: two at once cannot both find no refresh running.
        CrmSettings.objects.select_for_update().get_or_create(pk=SETTINGS_PK)
        active = CrmRefresh.objects.filter(status__in=CrmRefresh.ACTIVE).order_by("-id").first()
        if active is not None:
            hint = "its worker went quiet: resume it" if _is_dead(active) else "wait for it or stop it"
            raise Conflict(f"{active} is already {active.status}; {hint}", field="scope")
        scope, since, note = _scope_decide(scope=scope, model_name=config.model_name, wanted=wanted, config=config)
        refresh = CrmRefresh.objects.create(
            scope=scope,
            since=since,
            scope_note=note,
            model_name=config.model_name,
            model_version=wanted.primary_version,
            mapping=config.mapping,
            started_by=by,
            actor_name=actor_name,
        )
        audit_record(
            actor=by,
            actor_name=actor_name,
            action=AuditAction.CRM_REFRESH_STARTED,
            obj=refresh,
            after={
                "scope": scope,
                "since": since,
                "model": config.model_name,
                "version": wanted.primary_version,
                "note": note,
            },
        )
        if not inline:
            transaction.on_commit(lambda: _dispatch(refresh.pk))
    return refresh


def crm_refresh_start(
    *, scope: str, by: "Actor", inline: bool = False, on_progress: Callable | None = None
) -> CrmRefresh:
    """Start a refresh of every customer's segment (scope "all") or of those changed since the last one
    ("changed"), on the workers, or in this process with `inline` (the CLI's progress bar)."""
    permission_require(by, "serving.refresh_segments", doing="refresh customers' segments")
    refresh = _refresh_create(scope=scope, by=by, actor_name=by.get_username(), inline=inline)
    if inline:
        crm_refresh_execute(refresh_id=refresh.pk, on_progress=on_progress)
        refresh.refresh_from_db()
    return refresh


def crm_refresh_scheduled() -> CrmRefresh | None:
    """The beat task's refresh, acting as the system ("crm-refresh"): resume one whose worker died,
    else start one of the customers changed since the last; None while one is running."""
    active = CrmRefresh.objects.filter(status__in=CrmRefresh.ACTIVE).order_by("-id").first()
    if active is not None:
        if not _is_dead(active):
            logger.info("crm-refresh: %s is still %s; nothing to start", active, active.status)
            return None
        logger.warning("crm-refresh: %s went quiet (worker lost?); resuming it", active)
        return _refresh_requeue(refresh_id=active.pk, by=None, actor_name=SYSTEM_ACTOR, inline=False)
    try:
        return _refresh_create(scope=CrmRefresh.Scope.CHANGED, by=None, actor_name=SYSTEM_ACTOR, inline=False)
    except Conflict as exc:  # nothing in Production, or a refresh started meanwhile: try again next time
        logger.warning("crm-refresh: not started: %s", exc)
        return None


def crm_refresh_stop(*, refresh_id: int, by: "Actor", reason: str = "") -> CrmRefresh:
    """Ask a refresh to stop after the chunk it is writing (a queued one stops at once); it can be resumed."""
    permission_require(by, "serving.refresh_segments", doing="stop a segment refresh")
    with transaction.atomic():
        refresh = CrmRefresh.objects.select_for_update().filter(pk=refresh_id).first()
        if refresh is None:
            raise NotFound(f"refresh {refresh_id} does not exist", field="refresh_id")
        if refresh.status not in CrmRefresh.ACTIVE:
            raise Conflict(f"{refresh} is already {refresh.status}")
        before = refresh.status
        immediate = refresh.status == CrmRefresh.Status.QUEUED or _is_dead(refresh)
        refresh.status = CrmRefresh.Status.STOPPED if immediate else CrmRefresh.Status.STOPPING
        if immediate:
            refresh.finished_at = timezone.now()
        refresh.save(update_fields=["status", "finished_at"])
        audit_record(
            actor=by,
            action=AuditAction.CRM_REFRESH_STOP_REQUESTED,
            obj=refresh,
            before={"status": before},
            after={"status": refresh.status, "cursor": refresh.cursor},
            reason=reason,
        )
    return refresh


def crm_refresh_resume(
    *, refresh_id: int, by: "Actor", inline: bool = False, on_progress: Callable | None = None
) -> CrmRefresh:
    """Queue a stopped or failed refresh again; it goes on from the last customer it finished."""
    permission_require(by, "serving.refresh_segments", doing="resume a segment refresh")
    refresh = _refresh_requeue(refresh_id=refresh_id, by=by, actor_name=by.get_username(), inline=inline)
    if inline:
        crm_refresh_execute(refresh_id=refresh.pk, on_progress=on_progress)
        refresh.refresh_from_db()
    return refresh


def _refresh_requeue(*, refresh_id, by, actor_name, inline):
    with transaction.atomic():
        refresh = CrmRefresh.objects.select_for_update().filter(pk=refresh_id).first()
        if refresh is None:
            raise NotFound(f"refresh {refresh_id} does not exist", field="refresh_id")
        if refresh.status not in CrmRefresh.RESUMABLE and not _is_dead(refresh):
            raise Conflict(f"{refresh} is {refresh.status}: only a stopped or failed refresh is resumed")
        other = CrmRefresh.objects.filter(status__in=CrmRefresh.ACTIVE).exclude(pk=refresh.pk).first()
        if other is not None:
            raise Conflict(f"{other} is {other.status}: one refresh at a time")
        before = refresh.status
        refresh.status = CrmRefresh.Status.QUEUED
        refresh.error = ""
        refresh.finished_at = None
        refresh.heartbeat_at = timezone.now()
        refresh.save(update_fields=["status", "error", "finished_at", "heartbeat_at"])
        audit_record(
            actor=by,
            actor_name=actor_name,
            action=AuditAction.CRM_REFRESH_RESUMED,
            obj=refresh,
            before={"status": before},
            after={"status": refresh.status, "cursor": refresh.cursor, "processed": refresh.processed},
        )
        if not inline:
            transaction.on_commit(lambda: _dispatch(refresh.pk))
    return refresh


def _dispatch(refresh_id):
    """Queue the refresh's task; a broker that is down fails the refresh (resumable) with the reason."""
    from serving.crm.tasks import crm_refresh_run

    try:
        result = crm_refresh_run.apply_async(args=[refresh_id])
    except Exception as exc:  # kombu's errors for an unreachable broker vary by transport
        reason = f"could not queue the refresh: the task broker is unreachable ({type(exc).__name__}: {exc})"
        _refresh_end(refresh_id=refresh_id, runner=None, status=CrmRefresh.Status.FAILED, error=reason)
        raise BrokerUnavailable(reason, extra={"refresh_id": refresh_id}) from exc
    CrmRefresh.objects.filter(pk=refresh_id).update(celery_task_id=result.id or "")


def _refresh_claim(refresh_id):
    """Take the refresh for this attempt (a new runner token; an older attempt still alive loses its
    writes at its next chunk). None when there is nothing to run."""
    runner = uuid.uuid4().hex[:16]
    with transaction.atomic():
        refresh = CrmRefresh.objects.select_for_update().filter(pk=refresh_id).first()
        if refresh is None:
            logger.warning("crm-refresh %s does not exist; its task is dropped", refresh_id)
            return None, runner
        if refresh.status == CrmRefresh.Status.STOPPING:  # its worker died while stopping
            refresh.status, refresh.finished_at = CrmRefresh.Status.STOPPED, timezone.now()
            refresh.save(update_fields=["status", "finished_at"])
            return None, runner
        if refresh.status not in (CrmRefresh.Status.QUEUED, CrmRefresh.Status.RUNNING):
            return None, runner
        now = timezone.now()
        refresh.status = CrmRefresh.Status.RUNNING
        refresh.runner = runner
        refresh.attempts += 1
        refresh.started_at = refresh.started_at or now
        refresh.heartbeat_at = now
        refresh.save(update_fields=["status", "runner", "attempts", "started_at", "heartbeat_at"])
    return refresh, runner


def _refresh_end(*, refresh_id, runner, status, error=""):
    with transaction.atomic():
        refresh = CrmRefresh.objects.select_for_update().filter(pk=refresh_id).first()
        if refresh is None or (runner is not None and refresh.runner != runner):
            return refresh
        before = refresh.status
        refresh.status = status
        refresh.error = error[:4000]
        refresh.finished_at = timezone.now()
        refresh.save(update_fields=["status", "error", "finished_at"])
        audit_record(
            actor=None,
            actor_name=SYSTEM_ACTOR,
            action=AuditAction.CRM_REFRESH_ENDED,
            obj=refresh,
            before={"status": before},
            after={
                "status": status,
                "processed": refresh.processed,
                "updated": refresh.updated,
                "unchanged": refresh.unchanged,
                "failed": refresh.failed,
                "cursor": refresh.cursor,
            },
            reason=error[:500],
        )
    return refresh


def crm_refresh_execute(*, refresh_id: int, on_progress: Callable | None = None) -> CrmRefresh | None:
    """Run (or go on with) a refresh: walk the customers in id order from its cursor, in chunks predicted
    as one batch each, writing only the segments that changed. Safe to run twice: a finished chunk
    is never redone (its writes and the cursor commit together, or its writes carry idempotency keys
    and are sent again under the same keys), and a second attempt takes over from the first."""
    refresh, runner = _refresh_claim(refresh_id)
    if refresh is None:
        return None
    connector = connector_get()
    started = timezone.now()
    logger.info("crm-refresh #%s attempt %s from %r (%s)", refresh.pk, refresh.attempts, refresh.cursor, refresh.scope)
    try:
        wanted = serving_features_get(model_name=refresh.model_name)
        if refresh.total is None:
            refresh.total = connector.customers_count(updated_since=refresh.since)
            CrmRefresh.objects.filter(pk=refresh.pk, runner=runner).update(total=refresh.total)
        if not connector.transactional:
            _pending_resend(refresh, connector)
        while True:
            page = connector.customers_page(
                after=refresh.cursor, limit=connector.page_size, updated_since=refresh.since
            )
            if not page:
                break
            if _stop_requested(refresh):
                logger.info("crm-refresh #%s stopped at %r as asked", refresh.pk, refresh.cursor)
                return _refresh_end(refresh_id=refresh.pk, runner=runner, status=CrmRefresh.Status.STOPPED)
            _chunk(refresh, runner, page, wanted, connector)
            if on_progress:
                on_progress(refresh)
    except Superseded:
        logger.warning("crm-refresh #%s: another attempt took over; this one stops", refresh.pk)
        return None
    except ApplicationError as exc:  # CRM unreachable, no model in Production, a mapping gone stale
        logger.error("crm-refresh #%s failed at %r: %s", refresh.pk, refresh.cursor, exc)
        return _refresh_end(refresh_id=refresh.pk, runner=runner, status=CrmRefresh.Status.FAILED, error=str(exc))
    except SoftTimeLimitExceeded:
        return _refresh_end(
            refresh_id=refresh.pk,
            runner=runner,
            status=CrmRefresh.Status.FAILED,
            error=f"stopped by the time limit ({settings.CRM_REFRESH_TIME_LIMIT} s); resume it to go on",
        )
    except Exception as exc:
        _refresh_end(
            refresh_id=refresh.pk, runner=runner, status=CrmRefresh.Status.FAILED, error=f"{type(exc).__name__}: {exc}"
        )
        raise
    seconds = (timezone.now() - started).total_seconds()
    logger.info(
        "crm-refresh #%s finished: %s customers (%s updated, %s unchanged, %s failed) in %.1f s",
        refresh.pk, refresh.processed, refresh.updated, refresh.unchanged, refresh.failed, seconds,
    )  # fmt: skip
    return _refresh_end(refresh_id=refresh.pk, runner=runner, status=CrmRefresh.Status.FINISHED)


@dataclass(slots=True)
class _Change:
    """A segment change of a refresh, as its history row will hold it (a model instance per customer
    would cost more than predicting the customer)."""

    customer_id: str
    segment_before: str
    segment_after: str
    model_name: str
    model_version: int
    deployment_mode: str
    prediction: str
    confidence: float
    request_id: str
    row: int
    idempotency_key: str
    status: str
    error: str
    refresh_id: int
    actor_id: int | None
    actor_name: str


_CHANGE_VALUES = attrgetter(*(f.name for f in fields(_Change)))
_HISTORY_FIELDS = [f.name for f in fields(_Change)] + ["created_at"]
# `f.type is str` needs the annotations evaluated: this module must not use `from __future__ import annotations`.
_TEXT_FIELDS = {f.name for f in fields(_Change) if f.type is str}
# SQLite takes at most 32,766 parameters a statement.
_HISTORY_ROWS_PER_STATEMENT = 32_766 // len(_HISTORY_FIELDS)


def _history_insert(changes):
    """The changes' history rows, in one COPY on PostgreSQL (a fifth of the time of multi-row INSERTs
    there) or multi-row INSERTs elsewhere, as the prediction log writes its rows: the ORM's per-field
    preparation would cost more than the prediction."""
    if not changes:
        return
    ops = connection.ops
    table = ops.quote_name(SegmentChange._meta.db_table)
    names = [ops.quote_name(SegmentChange._meta.get_field(name).column) for name in _HISTORY_FIELDS]
    now = timezone.now()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            buffer = io.StringIO()
            write = csv.writer(buffer).writerow
            for change in changes:
                write((*_CHANGE_VALUES(change), now.isoformat()))
            buffer.seek(0)
            texts = ", ".join(names[i] for i, name in enumerate(_HISTORY_FIELDS) if name in _TEXT_FIELDS)
            # In CSV an unquoted empty field is NULL: FORCE_NOT_NULL reads it as '' in the text columns.
            cursor.cursor.copy_expert(
                f"COPY {table} ({', '.join(names)}) FROM STDIN WITH (FORMAT csv, FORCE_NOT_NULL ({texts}))", buffer
            )
            return
        adapted = ops.adapt_datetimefield_value(now)
        row_placeholder = "(" + ", ".join(["%s"] * len(names)) + ")"
        for start in range(0, len(changes), _HISTORY_ROWS_PER_STATEMENT):
            chunk = changes[start : start + _HISTORY_ROWS_PER_STATEMENT]
            values = [value for change in chunk for value in (*_CHANGE_VALUES(change), adapted)]
            cursor.execute(
                f"INSERT INTO {table} ({', '.join(names)}) VALUES {', '.join([row_placeholder] * len(chunk))}",  # noqa: S608
                values,
            )


def _chunk(refresh, runner, page, wanted: ServingFeatures, connector):
    """Predict one page of customers as a batch and write the segments that changed."""
    request_id = uuid.uuid4().hex
    model_name = refresh.model_name
    accepted, columns, refused = columns_checked(page, wanted.features, model_name)
    writes, changes, counts = [], [], Counter()
    version = None
    if accepted:
        served = columns_predict(model_name=model_name, columns=columns, rows=len(accepted), request_id=request_id)
        version = served.version
        segments = mapping_for(refresh.mapping, served).segments_of(served.labels, served.probabilities, served.classes)
        confidences = served.probabilities.max(axis=1).tolist()
        set_by = f"{SYSTEM_ACTOR} #{refresh.pk}"
        actor_name = refresh.actor_name
        for row, (record, segment) in enumerate(zip(accepted, segments, strict=True)):
            if segment == record.segment:
                counts[(segment, UpdateStatus.UNCHANGED)] += 1
                continue
            key = f"{refresh.pk}:{request_id}:{row}"
            writes.append(
                SegmentWrite(
                    customer_id=record.customer_id,
                    segment=segment,
                    previous=record.segment,
                    model_name=model_name,
                    model_version=version,
                    request_id=request_id,
                    idempotency_key=key,
                    set_by=set_by,
                )
            )
            changes.append(
                _Change(
                    customer_id=record.customer_id,
                    segment_before=record.segment,
                    segment_after=segment,
                    model_name=model_name,
                    model_version=version,
                    deployment_mode=served.served_by,
                    prediction=served.labels[row],
                    confidence=confidences[row],
                    request_id=request_id,
                    row=row,
                    idempotency_key=key,
                    status=SegmentChange.Status.APPLIED,
                    error="",
                    refresh_id=refresh.pk,
                    actor_id=refresh.started_by_id,
                    actor_name=actor_name,
                )
            )
    failures = [(record.customer_id, str(error)) for record, error in refused]
    if connector.transactional:
        with transaction.atomic():
            connector.segments_write(writes)
            _history_insert(changes)
            _advance(refresh, runner, page, counts_updated=len(changes), counts=counts, failures=failures)
        applied = changes
    else:
        applied, lost = _send(changes, writes, connector)
        failures += [(c.customer_id, c.error) for c in lost]
        with transaction.atomic():
            _advance(refresh, runner, page, counts_updated=len(applied), counts=counts, failures=failures)
    for change in applied:
        counts[(change.segment_after, UpdateStatus.UPDATED)] += 1
        logger.info(
            "crm %s:%s write customer=%s segment %s -> %s (%s v%s, refresh #%s)",
            change.request_id, change.row, change.customer_id, change.segment_before or "-",
            change.segment_after, model_name, version, refresh.pk,
        )  # fmt: skip
    for customer_id, reason in failures:
        logger.warning("crm %s failed customer=%s: %s (refresh #%s)", request_id, customer_id, reason, refresh.pk)
    for (segment, status), n in counts.items():
        updates_count(model=model_name, version=version, segment=segment, status=status, n=n)
    updates_count(model=model_name, version=None, segment="", status=UpdateStatus.FAILED, n=len(failures))


def _send(changes, writes, connector):
    """Write to an external CRM: history rows first as pending, then one PUT each (rate-bounded, with
    the row's idempotency key), then marked applied. A CRM going down mid-way leaves the rest pending,
    to be sent again under the same keys when the refresh resumes. Returns (applied, failed)."""
    for change in changes:
        change.status = SegmentChange.Status.PENDING
    _history_insert(changes)  # committed at once: it must survive a crash in the middle of the PUTs
    applied, lost = [], []
    try:
        for change, write in zip(changes, writes, strict=True):
            try:
                connector.segment_write(write, batch=True)
            except NotFound as exc:  # deleted in the CRM since it was read
                change.status, change.error = SegmentChange.Status.FAILED, str(exc)
                lost.append(change)
            else:
                change.status = SegmentChange.Status.APPLIED
                applied.append(change)
    finally:
        _statuses_save(applied + lost)
    return applied, lost


def _statuses_save(changes):
    """Mark a refresh's pending history rows applied or failed, once the CRM answered."""
    if not changes:
        return
    pending = SegmentChange.objects.filter(refresh_id=changes[0].refresh_id, status=SegmentChange.Status.PENDING)
    applied = [c.idempotency_key for c in changes if c.status == SegmentChange.Status.APPLIED]
    for start in range(0, len(applied), 2000):
        pending.filter(idempotency_key__in=applied[start : start + 2000]).update(status=SegmentChange.Status.APPLIED)
    for change in changes:  # rare: a customer deleted in the CRM between the read and the write
        if change.status == SegmentChange.Status.FAILED:
            pending.filter(idempotency_key=change.idempotency_key).update(
                status=change.status, error=change.error[:2000]
            )


def _pending_resend(refresh, connector):
    """Writes a dead attempt had recorded but perhaps not sent: sent again under their own keys, so the
    CRM applies each at most once."""
    pending = list(refresh.changes.filter(status=SegmentChange.Status.PENDING).order_by("id"))
    if not pending:
        return
    logger.info("crm-refresh #%s: sending %s pending writes again", refresh.pk, len(pending))
    done = []
    try:
        for change in pending:
            write = SegmentWrite(
                customer_id=change.customer_id,
                segment=change.segment_after,
                previous=change.segment_before,
                model_name=change.model_name,
                model_version=change.model_version,
                request_id=change.request_id,
                idempotency_key=change.idempotency_key,
                set_by=f"{SYSTEM_ACTOR} #{refresh.pk}",
            )
            try:
                connector.segment_write(write, batch=True)
                change.status = SegmentChange.Status.APPLIED
            except NotFound as exc:
                change.status, change.error = SegmentChange.Status.FAILED, str(exc)
            done.append(change)
    finally:
        _statuses_save(done)
        for change in done:
            status = UpdateStatus.UPDATED if change.status == SegmentChange.Status.APPLIED else UpdateStatus.FAILED
            updates_count(
                model=change.model_name, version=change.model_version, segment=change.segment_after, status=status
            )


def _advance(refresh, runner, page, *, counts_updated, counts, failures):
    """Move the cursor past `page` with the chunk's counts, if this attempt still owns the refresh
    (else Superseded, and the chunk's writes roll back with the transaction)."""
    unchanged = sum(n for (_, status), n in counts.items() if status == UpdateStatus.UNCHANGED)
    if failures and len(refresh.failures) < _FAILURES_KEPT:
        refresh.failures = (refresh.failures + [{"customer_id": c, "error": e[:300]} for c, e in failures])[
            :_FAILURES_KEPT
        ]
    now = timezone.now()
    owned = CrmRefresh.objects.filter(
        pk=refresh.pk, runner=runner, status__in=[CrmRefresh.Status.RUNNING, CrmRefresh.Status.STOPPING]
    ).update(
        cursor=page[-1].customer_id,
        processed=F("processed") + len(page),
        updated=F("updated") + counts_updated,
        unchanged=F("unchanged") + unchanged,
        failed=F("failed") + len(failures),
        failures=refresh.failures,
        heartbeat_at=now,
    )
    if not owned:
        raise Superseded
    refresh.cursor = page[-1].customer_id
    refresh.processed += len(page)
    refresh.updated += counts_updated
    refresh.unchanged += unchanged
    refresh.failed += len(failures)


def _stop_requested(refresh):
    return CrmRefresh.objects.filter(pk=refresh.pk, status=CrmRefresh.Status.STOPPING).exists()
