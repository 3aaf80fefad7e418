"""Reads of the CRM connector."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from django.db.models import Count
from django.db.models.functions import TruncDate
from django.utils import timezone

from core.errors import NotFound
from registry.models import ModelVersion
from serving.crm.models import CrmRefresh, CrmSettings, SegmentChange

if TYPE_CHECKING:
    from django.db.models import QuerySet

SETTINGS_PK = 1


def crm_settings_get() -> CrmSettings:
    """The CRM settings (the defaults, unsaved, until someone saves them)."""
    return CrmSettings.objects.filter(pk=SETTINGS_PK).first() or CrmSettings(pk=SETTINGS_PK)


def model_classes_get(*, model_name: str) -> list[str]:
    """The classes of a model: its Production version's, else its latest version's; NotFound without versions."""
    versions = ModelVersion.objects.filter(model__name=model_name)
    version = versions.filter(stage=ModelVersion.Stage.PRODUCTION).first() or versions.order_by("-version").first()
    if version is None:
        raise NotFound(f"model {model_name!r} does not exist or has no version", field="model_name")
    return [str(c) for c in version.signature["classes"]]


def refresh_get(*, refresh_id: int) -> CrmRefresh:
    """One refresh job; NotFound naming it."""
    refresh = CrmRefresh.objects.select_related("started_by").filter(pk=refresh_id).first()
    if refresh is None:
        raise NotFound(f"refresh {refresh_id} does not exist", field="refresh_id")
    return refresh


def refresh_list() -> QuerySet[CrmRefresh]:
    """Refresh jobs, newest first."""
    return CrmRefresh.objects.select_related("started_by").order_by("-created_at", "-id")


def refresh_last_finished(*, model_name: str) -> CrmRefresh | None:
    """The latest refresh of `model_name` that went through every customer in its scope."""
    return (
        CrmRefresh.objects.filter(model_name=model_name, status=CrmRefresh.Status.FINISHED)
        .order_by("-started_at", "-id")
        .first()
    )


def segment_history(*, customer_id: str, limit: int = 20) -> list[SegmentChange]:
    """A customer's segment changes, newest first."""
    return list(SegmentChange.objects.filter(customer_id=customer_id).order_by("-created_at", "-id")[:limit])


def segment_changes_per_day(*, days: int = 30) -> list[dict]:
    """Applied segment changes per day and new segment over the last `days` days, oldest first."""
    since = timezone.now() - timedelta(days=days)
    return list(
        SegmentChange.objects.filter(status=SegmentChange.Status.APPLIED, created_at__gte=since)
        .annotate(day=TruncDate("created_at"))
        .values("day", "segment_after")
        .annotate(count=Count("id"))
        .order_by("day", "segment_after")
    )
