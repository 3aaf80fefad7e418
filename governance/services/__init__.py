"""Writes of the governance app: the audit trail, compliance evaluations, policies, webhooks."""

from governance.services.audit import (
    GENESIS_HASH,
    ChainReport,
    audit_chain_verify,
    audit_entry_fields,
    audit_entry_seal,
    audit_head,
    audit_record,
)
from governance.services.compliance import (
    ComplianceSubject,
    compliance_evaluate,
    compliance_failures,
    policy_save,
)
from governance.services.webhooks import (
    audit_head_anchor,
    webhook_deliver,
    webhook_event_emit,
    webhook_redeliver,
    webhook_subscription_save,
)

__all__ = [
    "audit_head_anchor",
    "ComplianceSubject",
    "GENESIS_HASH",
    "ChainReport",
    "audit_entry_seal",
    "audit_head",
    "audit_chain_verify",
    "audit_entry_fields",
    "audit_record",
    "compliance_evaluate",
    "compliance_failures",
    "policy_save",
    "webhook_deliver",
    "webhook_event_emit",
    "webhook_redeliver",
    "webhook_subscription_save",
]
