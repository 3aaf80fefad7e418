"""A launch while the task broker is down: a clear error, and the run is not left QUEUED forever."""

import pytest

from experiments.models import Run
from governance.models import AuditEntry
from tests.e2e import processes

pytestmark = pytest.mark.django_db(transaction=True)


def test_queueing_with_the_broker_down_fails_the_run_with_the_reason(tmp_path, scientist):
    process = processes.start(
        "django",
        "train",
        "--settings",
        "mlops_site.settings",
        "--experiment",
        "no-broker",
        "--dataset",
        "iris",
        "--algorithm",
        "random_forest",
        "--queue",
        "--user",
        scientist.username,
        log=tmp_path / "train.log",
        CELERY_BROKER_URL="redis://127.0.0.1:1/0",  # nothing listens on port 1
    )
    assert process.wait(timeout=120) == 1
    output = process.log.read_text()
    assert "could not queue the run: the task broker is unreachable" in output
    run = Run.objects.get(experiment__name="no-broker")
    assert run.status == Run.Status.FAILED
    assert "broker is unreachable" in run.error
    actions = AuditEntry.objects.filter(object_id=str(run.pk), object_type="experiments.run")
    assert list(actions.order_by("id").values_list("action", flat=True)) == ["run.launched", "run.failed"]
