"""The prediction log, written off the request path.

A request hands one light record (its columns, labels and probabilities as they are) to a queue;
one thread per process turns records into rows and writes them in batches with a single
executemany (every PREDICTION_LOG_FLUSH_SECONDS, at most PREDICTION_LOG_BATCH records at a time),
and runs shadow versions, so neither slows the answer. `flush()` at exit (atexit, and gunicorn's
worker_exit) writes what is queued, so a worker shut down gracefully loses no row.
PREDICTION_LOG_SYNC writes in the request instead (tests, one-off scripts).
"""

import atexit
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import Error, connection, transaction

logger = logging.getLogger(__name__)

_COLUMNS = (
    "request_id",
    "row",
    "model_name",
    "version",
    "deployment_mode",
    "inputs",
    "prediction",
    "probabilities",
    "confidence",
    "latency_ms",
    "error",
    "created_at",
)
# 12 parameters a row: 500 rows stay far below SQLite's limit of 32,766 bound parameters a statement.
_ROWS_PER_STATEMENT = 500


@dataclass
class LogRecord:
    """One request's predictions as the request path has them; rows are built by the writer."""

    request_id: str
    model_name: str
    version: int
    mode: str
    created_at: object
    latency_ms: float
    columns: dict | None = None
    labels: list | None = None
    probabilities: object = None  # numpy array [rows, classes]
    classes: list | None = None
    error: str = ""
    shadow: object = None  # a LoadedModel to run on the same columns, logged beside

    def rows(self):
        if self.error or self.labels is None:
            return [
                (
                    self.request_id,
                    0,
                    self.model_name,
                    self.version,
                    self.mode,
                    None,
                    None,
                    None,
                    None,
                    self.latency_ms,
                    self.error[:2000],
                    self.created_at,
                )
            ]
        names = list(self.columns)
        values = [self.columns[name] for name in names]
        probabilities = self.probabilities.tolist()
        return [
            (
                self.request_id,
                index,
                self.model_name,
                self.version,
                self.mode,
                json.dumps(dict(zip(names, row, strict=True))),
                json.dumps(label),
                json.dumps(dict(zip(self.classes, probs, strict=True))),
                max(probs),
                self.latency_ms,
                "",
                self.created_at,
            )
            for index, (label, probs, row) in enumerate(
                zip(self.labels, probabilities, zip(*values, strict=True), strict=True)
            )
        ]


def _shadow_record(record):
    model = record.shadow
    started = time.perf_counter()
    shadow = LogRecord(
        request_id=record.request_id,
        model_name=model.model_name,
        version=model.version,
        mode="shadow",
        created_at=record.created_at,
        latency_ms=0.0,
        columns=record.columns,
        classes=model.classes,
    )
    try:
        shadow.labels, shadow.probabilities = model.predict(record.columns)
    except Exception as exc:  # a failing shadow is logged as such and never affects the answer
        shadow.error = f"{type(exc).__name__}: {exc}"
    shadow.latency_ms = (time.perf_counter() - started) * 1000
    return shadow


class PredictionLogWriter:
    def __init__(self):
        self._queue = queue.SimpleQueue()
        self._thread = None
        self._start_lock = threading.Lock()
        self._write_lock = threading.RLock()

    def submit(self, record):
        if settings.PREDICTION_LOG_SYNC:
            with self._write_lock:
                self._write([record])
            return
        self._queue.put(record)
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
                    self._thread.start()

    def _drain(self, limit):
        records = []
        while len(records) < limit:
            try:
                records.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return records

    def _run(self):
        while True:
            time.sleep(settings.PREDICTION_LOG_FLUSH_SECONDS)
            try:
                self._write_pending(settings.PREDICTION_LOG_BATCH)
            except Exception:  # the writer must survive anything; what it held is lost, and logged
                logger.exception("writing the prediction log failed")

    def _write_pending(self, limit):
        # Taking records off the queue and writing them happen under one lock, so flush() at exit
        # waits for a write in progress instead of losing the records it holds.
        with self._write_lock:
            records = self._drain(limit)
            while records:
                try:
                    self._write(records)
                except Error:
                    # The thread keeps its connection between batches (opening one per batch costs
                    # more than the batch); one gone stale is opened again and the batch retried once.
                    connection.close()
                    self._write(records)
                records = self._drain(limit)

    def _write(self, records):
        # Imported here: gunicorn.conf.py imports this module before Django's apps are loaded.
        from serving.models import PredictionLog

        records = records + [_shadow_record(r) for r in records if r.shadow is not None]
        adapt = connection.ops.adapt_datetimefield_value
        rows = [(*row[:-1], adapt(row[-1])) for record in records for row in record.rows()]
        if not rows:
            return
        table = connection.ops.quote_name(PredictionLog._meta.db_table)
        columns = ", ".join(connection.ops.quote_name(c) for c in _COLUMNS)
        row_placeholder = "(" + ", ".join(["%s"] * len(_COLUMNS)) + ")"
        # Multi-row INSERTs: the ORM's per-field preparation would cost more than the prediction, and
        # psycopg2's executemany is one round trip per row.
        with transaction.atomic(), connection.cursor() as cursor:  # one commit, not one per row
            for start in range(0, len(rows), _ROWS_PER_STATEMENT):
                chunk = rows[start : start + _ROWS_PER_STATEMENT]
                values = ", ".join([row_placeholder] * len(chunk))
                cursor.execute(
                    f"INSERT INTO {table} ({columns}) VALUES {values}",  # noqa: S608
                    [value for row in chunk for value in row],
                )

    def flush(self):
        """Write everything queued now (at exit)."""
        self._write_pending(10**9)


writer = PredictionLogWriter()
atexit.register(writer.flush)
