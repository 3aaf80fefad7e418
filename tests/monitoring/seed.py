"""A fleet worth looking at, made through the services: churn v1 in production with a canary v2, twelve hours
of logged traffic whose monthly charges drift upwards in the last hours, errors, feedback on part of the
rows, and the monitoring jobs run (the drift job at several moments, so the heatmap has columns)."""

from experiments import services as experiment_services
from monitoring.services import drift_reference_build, job_run
from registry import services as registry_services
from registry.models import PromotionRequest
from serving.models import Deployment
from serving.services import feedback_record
from tests.monitoring.conftest import LogWriter, hours_ago

HOURS = 12


def seed_fleet(*, churn_version, churn_frame, scientist, promote, put_on_traffic, application):
    """Returns (v1, v2); every row written by the real services and jobs."""
    promote(churn_version)
    drift_reference_build(version=churn_version)
    run = experiment_services.run_launch(
        experiment="monitoring-tests",
        dataset="customer_churn",
        n_samples=800,
        algorithm="logistic_regression",
        params={"C": 0.5},
        inline=True,
        by=scientist,
    )
    v2 = registry_services.model_version_register(run_id=run.pk, model_name="churn", by=scientist)
    drift_reference_build(version=v2)
    put_on_traffic(v2, mode="canary", percent=20)
    # Deployed (and approved) before the traffic below: dated back to the hour before it starts.
    deployed_at = hours_ago(HOURS + 1, minute=0)
    PromotionRequest.objects.filter(version__model__name="churn").update(
        requested_at=deployed_at, decided_at=deployed_at
    )
    Deployment.objects.filter(model__name="churn").update(created_at=deployed_at)

    primary, canary = LogWriter(churn_version), LogWriter(v2)
    target = churn_version.dataset.target
    labelled = []
    for offset in range(HOURS, 0, -1):
        frame = churn_frame.sample(60, random_state=offset).reset_index(drop=True)
        if offset <= 4:  # the last four hours: customers pay more than in training
            frame["monthly_charges"] += 25 * (5 - offset)
        latency = [1.0 + (i % 7) * 0.6 + (3.0 if offset == 3 else 0.0) for i in range(12)]
        records = primary.write(frame, at=hours_ago(offset, minute=20), per_request=5, latency_ms=latency)
        canary.write(frame.head(15), at=hours_ago(offset, minute=40), mode="canary", per_request=5, latency_ms=2.5)
        if offset in (2, 3):
            for _ in range(3):
                primary.error("tenure_months: must be a number", at=hours_ago(offset, minute=30))
        # Feedback on the first request of each hour: its five rows' true labels.
        for row, actual in enumerate(frame[target].head(5)):
            labelled.append((records[0].request_id, row, actual))
    for request_id, row, actual in labelled:
        feedback_record(request_id=request_id, row=row, actual=actual, by=application)
    job_run(job="aggregate", model_name="churn")
    for offset in (8, 6, 4, 2):
        job_run(job="drift", model_name="churn", now=hours_ago(offset, minute=55))
    job_run(job="drift", model_name="churn")
    return churn_version, v2
