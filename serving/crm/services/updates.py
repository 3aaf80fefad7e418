"""One customer's segment, on request: look up, predict, write back."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db import transaction

from core.errors import ApplicationError, InvalidInput, NotFound
from core.permissions import permission_require
from governance.models import AuditAction
from governance.services import audit_record
from serving.crm.connectors import SegmentWrite, connector_get
from serving.crm.models import SegmentChange
from serving.crm.prediction import columns_predict, serving_features_get
from serving.crm.selectors import crm_settings_get
from serving.crm.services.common import UpdateStatus, columns_checked, mapping_for, updates_count

if TYPE_CHECKING:
    from core.permissions import Actor

logger = logging.getLogger("serving.crm")


@dataclass(frozen=True)
class SegmentUpdate:
    """What one customer's update did."""

    customer_id: str
    features: dict
    model_name: str
    model_version: int
    served_by: str
    prediction: str
    probabilities: dict
    confidence: float
    segment_before: str
    segment_after: str
    status: UpdateStatus
    request_id: str


def customer_segment_update(*, customer_id: str, by: Actor, request_id: str = "") -> SegmentUpdate:
    """Look the customer up in the CRM, predict with the model in Production, write the segment back."""
    permission_require(by, "serving.update_segment", doing="update a customer's segment")
    customer_id = (customer_id or "").strip() if isinstance(customer_id, str) else ""
    if not customer_id:
        raise InvalidInput("is required: the CRM's id of the customer", field="customer_id")
    if len(customer_id) > 64:
        raise InvalidInput("is longer than 64 characters", field="customer_id")
    request_id = request_id or uuid.uuid4().hex
    config = crm_settings_get()
    model_name = config.model_name
    connector = connector_get()
    version = segment = None
    try:
        wanted = serving_features_get(model_name=model_name)
        logger.info("crm %s lookup customer=%s crm=%s", request_id, customer_id, connector.kind)
        record = connector.customer_get(customer_id)
        accepted, columns, refused = columns_checked([record], wanted.features, model_name)
        if refused:
            raise refused[0][1]
        served = columns_predict(model_name=model_name, columns=columns, rows=1, request_id=request_id)
        version = served.version
        probabilities = dict(zip(served.classes, map(float, served.probabilities[0]), strict=True))
        label = served.labels[0]
        segment = mapping_for(config.mapping, served).segment_of(label, probabilities)
        logger.info(
            "crm %s predicted customer=%s model=%s v%s (%s) label=%s p=%s segment=%s",
            request_id, customer_id, model_name, version, served.served_by, label,
            {k: round(v, 4) for k, v in probabilities.items()}, segment,
        )  # fmt: skip
        status = UpdateStatus.UNCHANGED
        if segment != record.segment:
            _write_one(
                connector,
                record=record,
                segment=segment,
                served=served,
                label=label,
                confidence=max(probabilities.values()),
                by=by,
                request_id=request_id,
            )
            status = UpdateStatus.UPDATED
    except (NotFound, InvalidInput):
        raise  # the request was wrong, not the update
    except ApplicationError as exc:  # CRM unreachable, a record the model cannot take, nothing in Production
        updates_count(model=model_name, version=version, segment=segment or "", status=UpdateStatus.FAILED)
        logger.warning("crm %s failed customer=%s: %s", request_id, customer_id, exc)
        raise
    logger.info(
        "crm %s write customer=%s segment %s -> %s (%s)",
        request_id, customer_id, record.segment or "-", segment, status,
    )  # fmt: skip
    updates_count(model=model_name, version=version, segment=segment, status=status)
    return SegmentUpdate(
        customer_id=customer_id,
        features={name: columns[name][0] for name, _ in wanted.features},
        model_name=model_name,
        model_version=version,
        served_by=served.served_by,
        prediction=label,
        probabilities=probabilities,
        confidence=max(probabilities.values()),
        segment_before=record.segment,
        segment_after=segment,
        status=status,
        request_id=request_id,
    )


def _write_one(connector, *, record, segment, served, label, confidence, by, request_id):
    """Write one segment and its history; for an external CRM the history row is written first as
    pending and marked applied once the CRM said yes (or failed, with the reason)."""
    actor_name = by.get_username()
    write = SegmentWrite(
        customer_id=record.customer_id,
        segment=segment,
        previous=record.segment,
        model_name=served.model_name,
        model_version=served.version,
        request_id=request_id,
        idempotency_key=f"{request_id}:{uuid.uuid4().hex[:12]}",
        set_by=actor_name,
    )
    change = SegmentChange(
        customer_id=record.customer_id,
        segment_before=record.segment,
        segment_after=segment,
        model_name=served.model_name,
        model_version=served.version,
        deployment_mode=served.served_by,
        prediction=label,
        confidence=confidence,
        request_id=request_id,
        row=0,
        idempotency_key=write.idempotency_key,
        actor=by,
        actor_name=actor_name,
    )

    def audit():
        audit_record(
            actor=by,
            action=AuditAction.CRM_SEGMENT_UPDATED,
            obj=change,
            before={"segment": record.segment},
            after={"segment": segment, "model": served.model_name, "version": served.version, "prediction": label},
            request_id=request_id,
        )

    if connector.transactional:
        with transaction.atomic():
            connector.segment_write(write)
            change.save()
            audit()
        return
    change.status = SegmentChange.Status.PENDING
    change.save()
    try:
        connector.segment_write(write)
    except ApplicationError as exc:
        SegmentChange.objects.filter(pk=change.pk).update(status=SegmentChange.Status.FAILED, error=str(exc)[:2000])
        raise
    with transaction.atomic():
        change.status = SegmentChange.Status.APPLIED
        change.save(update_fields=["status"])
        audit()
