"""What the CRM services share: audit actions, outcomes, and features out of CRM records."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from django.db import models

from core.errors import ApplicationError, Conflict, Unprocessable
from serving import inputs
from serving.crm.connectors import CustomerRecord
from serving.crm.mapping import SegmentMapping, mapping_parse
from serving.crm.prediction import Served
from serving.metrics import crm_segment_updates_total

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

SYSTEM_ACTOR = "crm-refresh"


class UpdateStatus(models.TextChoices):
    """The status label of crm_segment_updates_total."""

    UPDATED = "updated"
    UNCHANGED = "unchanged"
    FAILED = "failed"


class Superseded(Exception):
    """Another attempt took the refresh over (its worker was thought dead); this one stops writing."""


_INPUT_FIELD = re.compile(r"^instances\[(\d+)\]\.(.+)$")


def features_selected(
    record: CustomerRecord, features: Sequence[tuple[str, bool]], model_name: str
) -> dict[str, Any]:
    """The model's features of one record; Unprocessable naming the first one it lacks."""
    if not isinstance(record.features, dict):
        raise Unprocessable(f"customer {record.customer_id}'s features are not an object", field="features")
    selected = {}
    for name, _categorical in features:
        value = record.features.get(name)
        if value is None:
            raise Unprocessable(
                f"customer {record.customer_id} has no {name!r} in the CRM, and {model_name} needs it",
                field=f"features.{name}",
            )
        selected[name] = value
    return selected


def refused_where(exc: ApplicationError) -> tuple[int, str]:
    """serving.inputs names the row and feature of a refused value ("instances[3].age")."""
    match = _INPUT_FIELD.match(exc.field or "")
    if match is None:
        return 0, exc.field or "features"
    return int(match.group(1)), match.group(2)


def columns_checked(
    records: Iterable[CustomerRecord], features: Sequence[tuple[str, bool]], model_name: str
) -> tuple[list[CustomerRecord], dict[str, list[Any]], list[tuple[CustomerRecord, Unprocessable]]]:
    """Checked columns of the records the model can take, and (record, Unprocessable) for the others.

    serving.inputs checks types and ranges as it does for every prediction request; a refused row is
    taken out and the rest checked again from there, so each row is checked at most twice.
    """
    refused, candidates = [], []
    for record in records:
        try:
            candidates.append((record, features_selected(record, features, model_name)))
        except Unprocessable as exc:
            refused.append((record, exc))
    names = [name for name, _ in features]
    columns = {name: [] for name in names}
    accepted = []

    def take(part):
        built = inputs.columns_from_records([s for _, s in part], list(features), max_rows=len(part)).columns
        for name in names:
            columns[name].extend(built[name])
        accepted.extend(record for record, _ in part)

    start = 0
    while start < len(candidates):
        part = candidates[start:]
        try:
            take(part)
            break
        except Unprocessable as exc:
            index, name = refused_where(exc)
            index = min(index, len(part) - 1)
            record = part[index][0]
            refused.append(
                (
                    record,
                    Unprocessable(f"customer {record.customer_id}: {name} {exc.message}", field=f"features.{name}"),
                )
            )
            if index:
                take(part[:index])
            start += index + 1
    return accepted, columns, refused


def mapping_for(raw: object, served: Served) -> SegmentMapping:
    try:
        return mapping_parse(raw, classes=served.classes, model_name=f"{served.model_name} v{served.version}")
    except Unprocessable as exc:
        raise Conflict(
            f"the CRM mapping no longer fits the model that answered: {exc}; fix it in the CRM settings",
            field=exc.field,
        ) from None


def updates_count(*, model: str, version: int | None, segment: str, status: UpdateStatus, n: int = 1) -> None:
    if n:
        crm_segment_updates_total.labels(model, "" if version is None else str(version), segment, status).inc(n)
