"""Writes of the CRM connector. Callers import from here, not from the modules.

Both paths predict through serving.predict (via serving.crm.prediction), so CRM traffic takes the same
version choice, prediction log and metrics as any other request.
"""

from core.errors import BrokerUnavailable
from serving.crm.services.common import SYSTEM_ACTOR, UpdateStatus
from serving.crm.services.configuration import crm_settings_update, customers_seed
from serving.crm.services.refresh import (
    crm_refresh_execute,
    crm_refresh_resume,
    crm_refresh_scheduled,
    crm_refresh_start,
    crm_refresh_stop,
)
from serving.crm.services.updates import SegmentUpdate, customer_segment_update

__all__ = [
    "SYSTEM_ACTOR",
    "BrokerUnavailable",
    "AuditAction",
    "SegmentUpdate",
    "UpdateStatus",
    "crm_refresh_execute",
    "crm_refresh_resume",
    "crm_refresh_scheduled",
    "crm_refresh_start",
    "crm_refresh_stop",
    "crm_settings_update",
    "customer_segment_update",
    "customers_seed",
]
