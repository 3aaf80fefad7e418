"""The prediction log, written off the request path.

Requests hand their rows to a queue; one thread per process writes them in batches (every
PREDICTION_LOG_FLUSH_SECONDS or PREDICTION_LOG_BATCH rows) and also runs shadow versions, so
neither slows the answer. `flush()` at exit (atexit, and gunicorn's worker_exit) drains the queue,
so a worker shut down gracefully loses no row. PREDICTION_LOG_SYNC writes in the request instead
(tests, and one-off scripts).
"""

import atexit
import logging
import queue
import threading
import time

from django.conf import settings
from django.db import close_old_connections

logger = logging.getLogger(__name__)


class PredictionLogWriter:
    def __init__(self):
        self._queue = queue.SimpleQueue()
        self._thread = None
        self._start_lock = threading.Lock()
        self._write_lock = threading.Lock()

    def submit(self, job):
        """job: (rows, shadow): rows to log; shadow = (model, columns, request_id, created_at) or None."""
        if not settings.PREDICTION_LOG_ENABLED:
            return
        if settings.PREDICTION_LOG_SYNC:
            with self._write_lock:
                self._write([job])
            return
        self._queue.put(job)
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
                    self._thread.start()

    def _drain(self, limit):
        jobs = []
        while len(jobs) < limit:
            try:
                jobs.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return jobs

    def _run(self):
        while True:
            time.sleep(settings.PREDICTION_LOG_FLUSH_SECONDS)
            try:
                self._write_pending(settings.PREDICTION_LOG_BATCH)
            except Exception:  # a database hiccup must not kill the writer; the batch is lost, logged
                logger.exception("writing the prediction log failed")
            finally:
                close_old_connections()

    def _write_pending(self, limit):
        # Taking rows off the queue and writing them happen under one lock, so flush() at exit waits
        # for a write in progress instead of losing the rows it holds.
        with self._write_lock:
            jobs = self._drain(limit)
            while jobs:
                self._write(jobs)
                jobs = self._drain(limit)

    def _write(self, jobs):
        from serving.models import PredictionLog

        rows = []
        for logged, shadow in jobs:
            rows.extend(logged)
            if shadow is not None:
                rows.extend(_shadow_rows(*shadow))
        if rows:
            PredictionLog.objects.bulk_create(rows, batch_size=1000)

    def flush(self):
        """Write everything queued now (at exit)."""
        self._write_pending(10**9)


def _shadow_rows(model, columns, request_id, created_at):
    from serving.models import PredictionLog

    started = time.perf_counter()
    try:
        labels, probabilities = model.predict(columns)
    except Exception as exc:  # a failing shadow is logged as such and never affects the answer
        return [
            PredictionLog(
                request_id=request_id,
                model_name=model.model_name,
                version=model.version,
                deployment_mode="shadow",
                latency_ms=(time.perf_counter() - started) * 1000,
                error=f"{type(exc).__name__}: {exc}"[:2000],
                created_at=created_at,
            )
        ]
    latency = (time.perf_counter() - started) * 1000
    return [
        PredictionLog(
            request_id=request_id,
            row=index,
            model_name=model.model_name,
            version=model.version,
            deployment_mode="shadow",
            prediction=label,
            probabilities=dict(zip(model.classes, map(float, probs), strict=True)),
            confidence=float(max(probs)),
            latency_ms=latency,
            created_at=created_at,
        )
        for index, (label, probs) in enumerate(zip(labels, probabilities, strict=True))
    ]


writer = PredictionLogWriter()
atexit.register(writer.flush)
