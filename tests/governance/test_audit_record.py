"""What audit_record writes and what audit_chain_verify reports, field by field: the seal's exact form (a
chain written by an earlier release must still verify), the request context, the JSON of before/after, the
system actor, and the report a broken or cut chain gives."""

import datetime as dt
import logging
from decimal import Decimal

import pytest
from django.contrib.auth.models import AnonymousUser
from django.db import transaction
from django.test import RequestFactory

from experiments.models import Experiment
from governance.context import RequestContextMiddleware
from governance.models import AuditAction, AuditEntry
from governance.services import GENESIS_HASH, audit_chain_verify, audit_entry_fields, audit_entry_seal, audit_record
from governance.services.audit import audit_head

pytestmark = pytest.mark.django_db

ACTION = AuditAction.EXPERIMENT_UPDATED


def _experiment(name="audited"):
    return Experiment.objects.get_or_create(name=name)[0]


def _record(**kwargs):
    with transaction.atomic():
        return audit_record(
            actor=kwargs.pop("actor", None), action=ACTION, obj=kwargs.pop("obj", _experiment()), **kwargs
        )


def test_the_seal_of_a_known_entry_is_the_one_earlier_releases_wrote():
    """The seal's form is a contract with every chain already written: the same fields, names and JSON, or
    old logs stop verifying after an upgrade. The value was computed once (December 2026, the keyed form of
    governance migration 0007): HMAC-SHA256 of the JSON of {"prev", **fields} with sorted keys."""
    entry = AuditEntry(
        created_at=dt.datetime(2026, 11, 23, 17, 5, tzinfo=dt.UTC),
        actor_name="alex",
        action="promotion.decided",
        object_type="registry.promotionrequest",
        object_id="7",
        object_repr="iris-clf v7 → Production",
        before={"status": "PENDING"},
        after={"status": "APPROVED", "version": 7},
        reason="second pair of eyes",
        request_id="req-42",
        ip_address="10.0.0.5",
    )
    fields = audit_entry_fields(entry)
    assert sorted(fields) == sorted(
        ["created_at", "actor_name", "action", "object_type", "object_id", "object_repr", "before", "after"]
        + ["reason", "request_id", "ip_address"]
    )
    seal = audit_entry_seal(prev_hash="ab" * 32, fields=fields, key=b"the-audit-key")
    assert seal == "3e88d82b43c003f92054699ac62d68bacd2ede0cbe58f9832835ec2d616b3254"


def test_what_an_entry_holds_when_only_the_required_is_given():
    entry = _record()
    assert (entry.reason, entry.request_id, entry.ip_address) == ("", "", None)  # outside a request
    assert (entry.before, entry.after) == (None, None)
    assert (entry.actor, entry.actor_name) == (None, "system")
    assert (entry.object_type, entry.object_id, entry.object_repr) == (
        "experiments.experiment",
        str(entry.object_id),
        "audited",
    )
    assert _record(actor=AnonymousUser()).actor_name == "system"
    assert _record(reason="v7 misroutes refunds").reason == "v7 misroutes refunds"


def test_before_and_after_are_stored_as_the_json_they_will_be_read_back_as():
    when = dt.datetime(2026, 12, 7, 4, 0, tzinfo=dt.UTC)
    entry = _record(before={"at": when, "price": Decimal("1.50")}, after={"at": when, "n": 2})
    entry.refresh_from_db()
    assert entry.before == {"at": "2026-12-07T04:00:00Z", "price": "1.50"}
    assert entry.after == {"at": "2026-12-07T04:00:00Z", "n": 2}
    assert audit_chain_verify().intact  # sealed as stored


def test_a_long_description_is_cut_to_200_characters():
    long = Experiment(pk=10**6, name="e" * 300)
    assert _record(obj=long).object_repr == "e" * 200


def test_the_request_id_and_address_come_from_the_request_unless_given():
    def in_a_request(**kwargs):
        recorded = []
        request = RequestFactory().get("/", HTTP_X_REQUEST_ID="req-ctx-1", REMOTE_ADDR="10.9.8.7")

        def view(request):
            recorded.append(_record(**kwargs))
            from django.http import HttpResponse

            return HttpResponse()

        RequestContextMiddleware(view)(request)
        return recorded[0]

    entry = in_a_request()
    assert (entry.request_id, entry.ip_address) == ("req-ctx-1", "10.9.8.7")
    given = in_a_request(request_id="job-17")
    assert (given.request_id, given.ip_address) == ("job-17", None)  # a caller's own id is kept as given
    address = in_a_request(ip_address="10.0.0.1")
    assert (address.request_id, address.ip_address) == ("", "10.0.0.1")
    outside = _record(request_id="cli-3", ip_address="127.0.0.1")
    assert (outside.request_id, outside.ip_address) == ("cli-3", "127.0.0.1")


@pytest.mark.django_db(transaction=True)  # outside any transaction
def test_refusals_say_exactly_why():
    with pytest.raises(
        RuntimeError, match=r"^audit_record must run inside the transaction of the change it records\.$"
    ):
        audit_record(actor=None, action=ACTION, obj=_experiment())


def test_each_append_logs_the_head_line_a_notary_keeps(caplog, django_capture_on_commit_callbacks):
    with caplog.at_level(logging.INFO, logger="mlops_site.audit"), django_capture_on_commit_callbacks(execute=True):
        entry = _record()
    lines = [r.getMessage() for r in caplog.records if r.name == "mlops_site.audit"]
    assert lines == [f"audit head #{entry.pk} {entry.entry_hash} {ACTION}"]


def _tamper(sql, params):
    from tests.governance.test_audit import _tamper as tamper

    tamper(sql, params)


def test_a_broken_chain_report_names_the_entry_and_the_last_good_head():
    entries = [_record(after={"n": n}) for n in range(4)]
    _tamper("UPDATE governance_auditentry SET reason = 'edited' WHERE id = %s", [entries[2].pk])
    report = audit_chain_verify()
    assert not report.intact
    assert (report.checked, report.broken.pk) == (2, entries[2].pk)
    assert (report.head_id, report.head_hash) == (entries[1].pk, entries[1].entry_hash)
    assert report.why == (
        "its content does not match its seal (it was edited, or AUDIT_LOG_KEY is not the key that wrote it)"
    )


def test_a_removed_entry_report_names_the_next_one_and_the_last_good_head():
    entries = [_record(after={"n": n}) for n in range(4)]
    _tamper("DELETE FROM governance_auditentry WHERE id = %s", [entries[1].pk])
    report = audit_chain_verify()
    assert (report.checked, report.broken.pk) == (1, entries[2].pk)
    assert (report.head_id, report.head_hash) == (entries[0].pk, entries[0].entry_hash)
    assert report.why == "its prev_hash does not match the entry before it (an entry was removed or reordered)"


def test_a_chain_without_the_expected_head_reports_how_far_it_holds():
    entries = [_record(after={"n": n}) for n in range(3)]
    missing = "f" * 64
    report = audit_chain_verify(expect_head=missing)
    assert report.broken is None
    assert (report.checked, report.head_id, report.head_hash) == (3, entries[-1].pk, entries[-1].entry_hash)
    assert report.why == (
        "the expected head ffffffffffffffff… is not in the chain: entries were removed from its end, "
        "or the log was rewritten"
    )
    intact = audit_chain_verify(expect_head=entries[1].entry_hash.upper())
    assert intact.intact
    assert (intact.why, intact.checked, intact.head_id) == ("", 3, entries[-1].pk)


def test_verifying_a_long_chain_reports_progress_every_thousand_entries():
    experiment = _experiment()
    with transaction.atomic():
        for n in range(2001):
            audit_record(actor=None, action=ACTION, obj=experiment, after={"n": n})
    calls = []
    report = audit_chain_verify(on_progress=lambda done, total: calls.append((done, total)))
    total = AuditEntry.objects.count()
    assert report.intact
    assert calls == [(1000, total), (2000, total)]


def test_the_head_of_an_empty_log_is_the_genesis():
    if AuditEntry.objects.exists():
        pytest.skip("this database's migrations wrote entries")
    assert audit_head() == (None, GENESIS_HASH)
    entry = _record()
    assert audit_head() == (entry.pk, entry.entry_hash)
