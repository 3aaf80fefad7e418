"""Twenty approvals of different versions of one model at once leave one in Production and the chain intact."""

import threading

import pytest
from django.db import connection

from governance.services import audit_chain_verify
from registry import services
from registry.models import ModelVersion, PromotionRequest

N = 20


@pytest.mark.django_db(transaction=True)
def test_concurrent_approvals_leave_exactly_one_production_version(register, train, scientist, approver):
    run = train()
    versions = [register(run=run, name="iris-clf")]
    # The same run registers once per model: make the rest versions of the same model from copies of the run.
    from experiments.models import Run

    for _ in range(N - 1):
        copy = Run.objects.get(pk=run.pk)
        copy.pk = None
        copy.save()
        versions.append(services.model_version_register(run_id=copy.pk, model_name="iris-clf", by=scientist))
    requests = [
        services.promotion_request_create(version=v, to_stage="production", reason="race", by=scientist)
        for v in versions
    ]
    barrier = threading.Barrier(N)
    errors = []

    def approve(request_id):
        try:
            barrier.wait()
            services.promotion_request_approve(request_id=request_id, by=approver)
        except Exception as exc:  # collected: the assertion below shows them
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=approve, args=(r.pk,)) for r in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    stages = list(ModelVersion.objects.values_list("stage", flat=True))
    assert stages.count("Production") == 1
    assert stages.count("Archived") == N - 1
    assert PromotionRequest.objects.filter(status="APPROVED").count() == N
    report = audit_chain_verify()
    assert report.intact, report.why
    assert report.checked > 4 * N
