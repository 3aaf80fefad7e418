"""What the monitoring jobs computed, as Prometheus gauges on /metrics, read from the database at each scrape.

A custom collector rather than Gauge objects: every web process answers the same numbers (they are rows in
PostgreSQL, not per-process state), so it is correct under any number of workers and replicas, and
prometheus_client's multiprocess files are not involved. Prometheus adds `instance`; the alerting rules in
deploy/prometheus/ take `max without (instance)`.
"""

import logging
import math
import os

from django.conf import settings
from django.http import HttpResponse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily

from core.prometheus import metrics_token_refusal
from monitoring.selectors import alerts_firing, drift_latest_runs, quality_by_version
from monitoring.windows import window_parse

logger = logging.getLogger(__name__)


def _finite(value):
    return value is not None and math.isfinite(value)


class MonitoringCollector:
    """Drift per feature and method, dataset drift, live/estimated/validation accuracy, labelled rows, firing alerts."""

    def describe(self):
        return []  # no read at registration: the database is read when scraped

    def collect(self):
        try:
            yield from self._collect()
        except Exception:  # a database outage must not take the prediction metrics down with it
            logger.exception("monitoring gauges not collected")
            up = GaugeMetricFamily("mlops_monitoring_collector_up", "1 if the monitoring gauges were read.")
            up.add_metric([], 0)
            yield up

    def _collect(self):
        window = window_parse(settings.MONITORING_DRIFT_WINDOW, now=timezone.now())
        version_labels = ["model", "model_version"]
        families = {
            "rows": GaugeMetricFamily(
                "mlops_monitored_rows", f"Predicted rows over the last {window.label}.", labels=version_labels
            ),
            "labelled": GaugeMetricFamily(
                "mlops_labelled_rows",
                f"Predicted rows with feedback (a true label) over the last {window.label}.",
                labels=version_labels,
            ),
            "accuracy": GaugeMetricFamily(
                "mlops_live_accuracy",
                f"Accuracy on the labelled rows of the last {window.label}.",
                labels=version_labels,
            ),
            "estimated_accuracy": GaugeMetricFamily(
                "mlops_estimated_accuracy",
                f"Accuracy estimated from calibrated confidence (CBPE) over the last {window.label}.",
                labels=version_labels,
            ),
            "validation_accuracy": GaugeMetricFamily(
                "mlops_validation_accuracy",
                "Accuracy of the version on its held-out validation split at registration.",
                labels=version_labels,
            ),
        }
        for quality in quality_by_version(start=window.start, end=window.end):
            labels = [quality.model_name, str(quality.version)]
            for name, family in families.items():
                value = getattr(quality, name)
                if _finite(value):
                    family.add_metric(labels, value)
        yield from families.values()

        run_labels = ["model", "model_version", "window", "kind"]
        dataset_drift = GaugeMetricFamily(
            "mlops_dataset_drift", "1 if the latest drift run found dataset drift, else 0.", labels=run_labels
        )
        share = GaugeMetricFamily(
            "mlops_drift_share", "Share of the features drifted in the latest drift run.", labels=run_labels
        )
        computed = GaugeMetricFamily(
            "mlops_drift_computed_timestamp_seconds", "When the latest drift run was computed.", labels=run_labels
        )
        column_labels = [*run_labels, "feature", "role", "method"]
        score = GaugeMetricFamily(
            "mlops_drift_score",
            "The deciding drift test's score per column (a p-value for ks, chisquare and z; a distance otherwise).",
            labels=column_labels,
        )
        threshold = GaugeMetricFamily(
            "mlops_drift_threshold", "The threshold the drift score is compared with.", labels=column_labels
        )
        drifted = GaugeMetricFamily(
            "mlops_feature_drifted", "1 if the column drifted in the latest drift run, else 0.", labels=column_labels
        )
        for gauge in drift_latest_runs():
            run = gauge.run
            labels = [run.model_name, str(run.version), run.window, run.kind]
            if run.dataset_drift is not None:
                dataset_drift.add_metric(labels, float(run.dataset_drift))
            if _finite(run.share_drifted):
                share.add_metric(labels, run.share_drifted)
            computed.add_metric(labels, run.computed_at.timestamp())
            for result in gauge.results:
                column = [*labels, result.name, result.role, result.method]
                if _finite(result.score):
                    score.add_metric(column, result.score)
                if _finite(result.threshold):
                    threshold.add_metric(column, result.threshold)
                if result.drifted is not None:
                    drifted.add_metric(column, float(result.drifted))
        yield from (dataset_drift, share, computed, score, threshold, drifted)

        firing = GaugeMetricFamily(
            "mlops_alerts_firing",
            "1 per alert firing now (acknowledged or silenced ones too: they still hold).",
            labels=["model", "kind", "rule", "acknowledged"],
        )
        for alert in alerts_firing():
            firing.add_metric(
                [alert.model.name, alert.rule.kind, alert.rule.name, str(alert.acknowledged_at is not None).lower()], 1
            )
        yield firing
        up = GaugeMetricFamily("mlops_monitoring_collector_up", "1 if the monitoring gauges were read.")
        up.add_metric([], 1)
        yield up


COLLECTOR = MonitoringCollector()


def metrics_view(request):
    """/metrics: django_prometheus's page (every worker's files added up in multiprocess mode) and the
    monitoring gauges, once; 401 without the token when METRICS_TOKEN is set."""
    refusal = metrics_token_refusal(request)
    if refusal is not None:
        return refusal
    registry = CollectorRegistry()
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_Delegate(REGISTRY))
    registry.register(COLLECTOR)
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


class _Delegate:
    def __init__(self, registry):
        self.registry = registry

    def describe(self):
        return []

    def collect(self):
        return self.registry.collect()
