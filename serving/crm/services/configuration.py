"""The CRM settings (model and mapping) and the embedded CRM's demo customers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from core.errors import InvalidInput, NotFound, Unprocessable
from core.permissions import permission_require
from governance.models import AuditAction
from governance.services import audit_record
from serving.crm.mapping import mapping_parse
from serving.crm.models import CrmSettings, Customer
from serving.crm.selectors import SETTINGS_PK, crm_settings_get, model_classes_get

if TYPE_CHECKING:
    from core.permissions import Actor


def crm_settings_update(
    *, by: Actor, model_name: str | None = None, mapping: dict[str, Any] | None = None, reason: str = ""
) -> CrmSettings:
    """Choose the model that drives segments and the mapping from its predictions; audited.

    The mapping is checked against the model's classes (its Production version's, else its latest's).
    """
    permission_require(by, "serving.change_crmsettings", doing="change the CRM settings")
    current = crm_settings_get()
    model_name = current.model_name if model_name is None else str(model_name).strip()
    mapping = current.mapping if mapping is None else mapping
    if not model_name:
        raise InvalidInput("is required", field="model_name")
    try:
        classes = model_classes_get(model_name=model_name)
    except NotFound as exc:
        raise Unprocessable(exc.message, field="model_name") from None
    mapping_parse(mapping, classes=classes, model_name=model_name)
    with transaction.atomic():
        row, _ = CrmSettings.objects.select_for_update().get_or_create(pk=SETTINGS_PK)
        before = {"model_name": row.model_name, "mapping": row.mapping}
        row.model_name, row.mapping = model_name, mapping
        row.updated_by = by
        row.save()
        audit_record(
            actor=by,
            action=AuditAction.CRM_SETTINGS_UPDATED,
            obj=row,
            before=before,
            after={"model_name": model_name, "mapping": mapping},
            reason=reason,
        )
    return row


def customers_seed(*, count: int, by: Actor, seed: int = 7) -> int:
    """Fill an empty embedded CRM with `count` synthetic customers (the customer_churn generator);
    returns how many were made, 0 if it already had customers."""
    from experiments.datasets import make_customer_churn

    permission_require(by, "serving.add_customer", doing="add customers to the embedded CRM")
    if not isinstance(count, int) or not 1 <= count <= 1_000_000:
        raise InvalidInput("must be an integer from 1 to 1,000,000", field="count")
    if Customer.objects.exists():
        return 0
    frame = make_customer_churn(n_samples=count, seed=seed).drop(columns=["churned"])
    names = list(frame.columns)
    now = timezone.now()
    rows = []
    for i, values in enumerate(frame.itertuples(index=False, name=None), start=1):
        # The specification's example customers are CUST_TEST_001 to CUST_TEST_010.
        customer_id = f"CUST_TEST_{i:03d}" if i <= 10 else f"CUST_{i:07d}"
        features = {
            name: (value.item() if hasattr(value, "item") else value) for name, value in zip(names, values, strict=True)
        }
        rows.append(Customer(customer_id=customer_id, features=features, features_updated_at=now))
    with transaction.atomic():
        Customer.objects.bulk_create(rows, batch_size=2000)
        row, _ = CrmSettings.objects.get_or_create(pk=SETTINGS_PK)
        audit_record(actor=by, action=AuditAction.CRM_CUSTOMERS_SEEDED, obj=row, after={"count": count, "seed": seed})
    return count
