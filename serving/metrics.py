"""The Prometheus metrics of predictions. Under gunicorn, prometheus_client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR, set up in gunicorn.conf.py) makes /metrics add up every worker."""

from prometheus_client import Counter, Histogram

prediction_requests_total = Counter(
    "prediction_requests_total",
    "Prediction requests, by model, version and outcome.",
    ["model", "model_version", "status"],
)
prediction_latency_seconds = Histogram(
    "prediction_latency_seconds",
    "Server-side time to answer a prediction request.",
    ["model", "model_version"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
prediction_errors_total = Counter(
    "prediction_errors_total",
    "Prediction requests refused or failed, by kind.",
    ["model", "model_version", "error_type"],
)
prediction_confidence = Histogram(
    "prediction_confidence",
    "Confidence (top class probability) of each predicted row.",
    ["model", "model_version"],
    buckets=(0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
)
crm_segment_updates_total = Counter(
    "crm_segment_updates_total",
    "Customer segments predicted for the CRM, by model, version, segment and outcome "
    "(updated: written; unchanged: already right; failed: not written).",
    ["model", "model_version", "segment", "status"],
)
prediction_log_rows_spilled_total = Counter(
    "prediction_log_rows_spilled_total",
    "Prediction log rows the database would not take, kept on local disk to be written when it returns.",
)
prediction_log_rows_replayed_total = Counter(
    "prediction_log_rows_replayed_total",
    "Prediction log rows written from the local spill once the database was back.",
)
prediction_log_rows_lost_total = Counter(
    "prediction_log_rows_lost_total",
    "Prediction log rows lost, by reason (spill_full: PREDICTION_LOG_SPILL_MAX_BYTES reached; disk_error: "
    "the spill could not be written, e.g. disk full; unreadable: a spill file was damaged; "
    "refused: the database, up, refused the rows; error: a bug).",
    ["reason"],
)
