"""What a person asks of monitoring by hand (compute drift now, run a job now, rebuild a reference):
the permission is decided here, whichever surface asked. The scheduled jobs call the services directly."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.permissions import permission_require
from monitoring.models import DriftRun
from monitoring.services.drift import drift_compute

if TYPE_CHECKING:
    from core.permissions import Actor
    from monitoring.stattests import Method
    from monitoring.windows import Window

# Who may read the prediction log may ask for what is computed from it.
MONITORING_PERMISSION = "serving.view_predictionlog"


def drift_compute_requested(
    *,
    by: Actor,
    model_name: str,
    window: Window,
    version: int | None = None,
    method: Method | str = "auto",
    kind: DriftRun.Computation | str = "exact",
) -> DriftRun:
    """Compute a model's drift over `window` now, for a user who may read the prediction log."""
    permission_require(by, MONITORING_PERMISSION, doing="compute drift")
    return drift_compute(
        model_name=model_name, window=window, version=version, method=method, kind=kind, trigger=DriftRun.Trigger.API
    )


def monitoring_job_queue(*, job: str, model_name: str, by: Actor) -> None:
    """Queue one monitoring job of one model on the monitoring queue now (the admin's "Run now")."""
    from monitoring.tasks import run_job

    permission_require(by, MONITORING_PERMISSION, doing="run monitoring jobs")
    run_job.delay(job, model_name)


def drift_reference_rebuild_queue(*, version_id: int, by: Actor) -> None:
    """Queue the rebuild of a version's drift reference from its training data."""
    from monitoring.tasks import build_reference

    permission_require(by, MONITORING_PERMISSION, doing="rebuild drift references")
    build_reference.delay(version_id)
