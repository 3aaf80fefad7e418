"""The prediction log, written off the request path.

A request hands one light record (its columns, labels and probabilities as they are) to a queue;
one thread per process turns records into rows and writes them in batches, with one COPY on PostgreSQL
and one executemany on SQLite (every PREDICTION_LOG_FLUSH_SECONDS, at most PREDICTION_LOG_BATCH records at a time),
and runs shadow versions, so neither slows the answer. `close()` at exit (atexit, and gunicorn's worker_exit)
ends the thread and writes what is queued, so a worker shut down gracefully loses no row.
PREDICTION_LOG_SYNC writes in the request instead (tests, one-off scripts).

A batch the database does not take (down, restarting, connection lost) is spilled to local disk
(LogSpill, PREDICTION_LOG_SPILL_DIR, bounded by PREDICTION_LOG_SPILL_MAX_BYTES) and written, in order
and before anything newer, once it is back; spilled, replayed and lost rows are Prometheus counters.

Each row also carries its numeric features as a typed vector (`features`, in the order of the
version's signature, NaN where missing), which monitoring reads instead of the JSON. On PostgreSQL
the table is partitioned by day: partitions are made ahead by the daily maintenance task (and by the
writer itself if a row arrives for a day that has none), and days older than
PREDICTION_LOG_RETENTION_DAYS are dropped whole (`prediction_log_retention_apply`).
"""

import atexit
import contextlib
import datetime as dt
import io
import logging
import math
import os
import pickle
import queue
import re
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
from django.conf import settings
from django.db import DatabaseError, Error, InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from serving.metrics import (
    prediction_log_rows_lost_total,
    prediction_log_rows_replayed_total,
    prediction_log_rows_spilled_total,
)

logger = logging.getLogger(__name__)

_COLUMNS = (
    "request_id",
    "row",
    "model_name",
    "version",
    "deployment_mode",
    "inputs",
    "features",
    "prediction",
    "predicted_index",
    "probabilities",
    "confidence",
    "latency_ms",
    "error",
    "created_at",
)


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

    def rows(self, numeric=()):
        """The table's rows; `numeric` names the features that go into the typed vector, in its order."""
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
        if numeric:  # the vector's columns, transposed once per record rather than looked up per row
            vectors = [
                list(vector)
                for vector in zip(
                    *[[_NAN if v is None else float(v) for v in self.columns[name]] for name in numeric], strict=True
                )
            ]
        else:
            vectors = [None] * len(self.labels)
        positions = {label: position for position, label in enumerate(self.classes)}
        classes = self.classes
        return [
            (
                self.request_id,
                index,
                self.model_name,
                self.version,
                self.mode,
                _json(dict(zip(names, row, strict=True))),
                vector,
                _json(label),
                positions.get(label),
                _json(dict(zip(classes, probs, strict=True))),
                max(probs),
                self.latency_ms,
                "",
                self.created_at,
            )
            for index, (label, probs, row, vector) in enumerate(
                zip(self.labels, probabilities, zip(*values, strict=True), vectors, strict=True)
            )
        ]


_NAN = math.nan


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_field(value):
    """One value in COPY's text format: \\N for NULL, text with its backslashes and line breaks escaped."""
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return value.translate(_COPY_ESCAPES)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _json_default(value):
    """numpy values orjson does not take itself: 0-d, object and text arrays as lists, long doubles as floats."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        item = value.item()
        return float(item) if isinstance(item, np.floating) else item  # a long double's item() is itself
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _json(value, _dumps=orjson.dumps, _option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS):
    """JSON text for a jsonb column: orjson, a tenth of the json module's time a row. NaN and infinities
    become null (missing), which jsonb would otherwise refuse for the whole batch."""
    return _dumps(value, default=_json_default, option=_option).decode()


def _json_text(value):
    """JSON for a jsonb column in COPY's text format: orjson escapes tabs and line breaks inside strings
    itself, so only its backslashes are doubled."""
    text = _json(value)
    return text.replace("\\", "\\\\") if "\\" in text else text


def _numbers_text(matrix):
    """Each row of a float64 [rows, columns] array as its numbers' text separated by commas (orjson, all rows
    in one call); NaN as `null`. (No rows give one empty text, and no line uses it.)"""
    return _json(np.ascontiguousarray(matrix))[2:-2].split("],[")


def _probabilities_template(classes):
    """JSON of {class: probability} with %s where each probability goes, keys as _json writes them."""
    keys = [_json({label: 0})[1:-3].replace("%", "%%") for label in classes]
    return "{" + ",".join(f"{key}:%s" for key in keys) + "}"


def _copy_lines(records, layout, adapt):
    """The records' rows as lines of COPY's text format (PostgreSQL), in order. Consecutive records of one
    version with the same features (a batch of single-row requests, mostly) are built together: their
    numbers turned into text by one orjson call each for the feature vectors, probabilities and
    confidences, each label's JSON made once: a third (single-row records) to a quarter (1,000-row ones) of
    the time of building every record on its own, measured alone."""
    lines = []
    start = 0
    while start < len(records):
        first = records[start]
        if first.error or first.labels is None:
            when = str(adapt(first.created_at))
            lines += ["\t".join([_copy_field(value) for value in (*row[:-1], when)]) + "\n" for row in first.rows()]
            start += 1
            continue
        names = tuple(first.columns)
        end = start + 1
        while end < len(records) and _same_rows(records[end], first, names):
            end += 1
        lines += _run_lines(records[start:end], names, layout(first), adapt)
        start = end
    return lines


def _same_rows(record, first, names):
    """Whether `record`'s rows are laid out as `first`'s: the same version, deployment, classes and features."""
    return (
        not record.error
        and record.labels is not None
        and record.version == first.version
        and record.model_name == first.model_name
        and record.mode == first.mode
        and record.classes == first.classes
        and tuple(record.columns) == names
    )


def _run_lines(run, names, numeric, adapt):
    """COPY lines of records with the same layout (see _copy_lines), each record's rows in order."""
    first, null = run[0], "\\N"
    arrays = []
    for record in run:
        # A record whose columns or probabilities are not as long as its labels is a bug upstream: refused
        # whole (the batch counted lost), never written with values under another row.
        count, probs = len(record.labels), np.asarray(record.probabilities)
        lengths = {len(values) for values in record.columns.values()}
        if lengths - {count} or probs.shape != (count, len(first.classes)):
            raise ValueError(
                f"the rows of prediction {record.request_id} do not line up: {count} labels, probabilities "
                f"{probs.shape}, columns of {sorted(lengths)} values"
            )
        arrays.append(probs)
    columns = {name: [value for record in run for value in record.columns[name]] for name in names}
    inputs = [_json_text(dict(zip(names, row, strict=True))) for row in zip(*columns.values(), strict=True)]
    if numeric:
        matrix = np.array([columns[name] for name in numeric], dtype=np.float64).T  # None becomes NaN
        vectors = ["{" + text.replace("null", "NaN") + "}" for text in _numbers_text(matrix)]
    else:
        vectors = [null] * len(inputs)
    matrix = np.concatenate(arrays).astype(np.float64)
    template = _probabilities_template(first.classes).replace("\\", "\\\\")
    probabilities = [template % tuple(text.split(",")) for text in _numbers_text(matrix)]
    confidences = _json(matrix.max(axis=1)).replace("null", "NaN")[1:-1].split(",")
    positions = {label: position for position, label in enumerate(first.classes)}
    label_texts = {}
    middle = f"\t{_copy_field(first.model_name)}\t{first.version}\t{_copy_field(first.mode)}\t"
    lines = []
    row = 0
    for record in run:
        head = f"{_copy_field(record.request_id)}\t"
        tail = f"\t{record.latency_ms!r}\t\t{adapt(record.created_at)}\n"
        for index, label in enumerate(record.labels):
            label_text = label_texts.get(label)
            if label_text is None:
                position = positions.get(label)
                label_text = label_texts[label] = f"{_json_text(label)}\t{null if position is None else position}"
            lines.append(
                f"{head}{index}{middle}{inputs[row]}\t{vectors[row]}\t{label_text}\t{probabilities[row]}\t"
                f"{confidences[row]}{tail}"
            )
            row += 1
    return lines


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


def _numeric_features(model_name, version):
    """The names of a version's numeric features in signature order (the typed vector's layout)."""
    from registry.models import ModelVersion

    signature = (
        ModelVersion.objects.filter(model__name=model_name, version=version).values_list("signature", flat=True).first()
    )
    if signature is None:
        return ()
    return tuple(f["name"] for f in signature["features"] if f["dtype"] != "categorical")


# The database is down or the connection gone: worth keeping the batch for later. Other errors are about the
# rows themselves, which a later try would meet again.
UNAVAILABLE = (OperationalError, InterfaceError)
_CLAIMED = re.compile(r"^.+\.spill\.claimed-(?P<pid>\d+)$")


class LogSpill:
    """Batches the database would not take, kept in files under PREDICTION_LOG_SPILL_DIR until it does.

    One file a batch (pickled records: this process wrote them, into a directory only it and its siblings
    use), named by the time it was spilled, so replaying in name order is replaying in order. A file is
    claimed by renaming it before it is replayed, so two processes sharing the directory never both write
    it; one claimed by a process that died is taken back. The directory holds at most
    PREDICTION_LOG_SPILL_MAX_BYTES: past that, or when the disk is full, the batch is lost, counted in
    prediction_log_rows_lost_total and logged as an error — never silently. A batch the database refuses
    for its content once back is set aside (`.refused`) and counted, so it does not block the ones after."""

    _SUFFIX = ".spill"

    def __init__(self):
        self._sequence = 0
        self.pending = True  # files left by an earlier process are looked for once

    @property
    def directory(self):
        return Path(settings.PREDICTION_LOG_SPILL_DIR)

    def _size(self):
        total = 0
        for entry in os.scandir(self.directory):
            with contextlib.suppress(FileNotFoundError):
                total += entry.stat().st_size
        return total

    def save(self, records):
        """Keep `records` on disk; False (and counted as lost) when the spill is full or the disk is."""
        rows = _row_count(records)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            data = pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL)
            limit = settings.PREDICTION_LOG_SPILL_MAX_BYTES
            if self._size() + len(data) > limit:
                return self.lost(records, "spill_full", f"the spill directory holds {limit} bytes at most")
            self._sequence += 1
            name = f"{time.time_ns():020d}-{os.getpid()}-{self._sequence:06d}{self._SUFFIX}"
            temporary = self.directory / f".{name}.tmp"
            try:
                with open(temporary, "wb") as file:
                    file.write(data)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(temporary, self.directory / name)
            except OSError:
                with contextlib.suppress(OSError):
                    temporary.unlink()
                raise
        except OSError as exc:
            return self.lost(records, "disk_error", f"{type(exc).__name__}: {exc}")
        self.pending = True
        prediction_log_rows_spilled_total.inc(rows)
        logger.warning("prediction log: database unavailable, %d row(s) spilled to %s", rows, self.directory)
        return True

    def lost(self, records, reason, detail):
        rows = _row_count(records)
        prediction_log_rows_lost_total.labels(reason=reason).inc(rows)
        logger.error("prediction log: %d row(s) LOST (%s): %s", rows, reason, detail)
        return False

    def _claimable(self):
        """The spilled files to replay, oldest first: unclaimed ones, and those claimed by a process now dead."""
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            if name.endswith(self._SUFFIX):
                found.append(name)
                continue
            claimed = _CLAIMED.match(name)  # set-aside files (.refused, .unreadable) match neither
            if claimed and int(claimed["pid"]) != os.getpid() and not _alive(int(claimed["pid"])):
                found.append(name)
        return sorted(found, key=lambda name: name.split(".claimed-")[0])

    def replay(self, write):
        """Write the spilled batches in order with `write`; False if the database refused one (it stays)."""
        if not self.pending:
            return True
        for name in self._claimable():
            original = self.directory / (name.split(".claimed-")[0])
            claimed = self.directory / f"{original.name}.claimed-{os.getpid()}"
            try:
                os.rename(self.directory / name, claimed)
            except FileNotFoundError:
                continue  # another process took it
            try:
                records = pickle.loads(claimed.read_bytes())  # noqa: S301 (our own file, see the class)
            except (OSError, pickle.UnpicklingError, EOFError) as exc:
                logger.error("prediction log: spill file %s unreadable, set aside: %s", claimed, exc)
                os.replace(claimed, claimed.with_name(claimed.name + ".unreadable"))
                prediction_log_rows_lost_total.labels(reason="unreadable").inc()
                continue
            try:
                write(records)
            except UNAVAILABLE:
                os.replace(claimed, original)  # back in line, first to go when the database returns
                raise
            except Error as exc:  # the database is up and refuses these rows: they would block the rest
                os.replace(claimed, claimed.with_name(claimed.name + ".refused"))
                self.lost(records, "refused", f"{type(exc).__name__}: {exc}; kept as {claimed.name}.refused")
                continue
            claimed.unlink()
            rows = _row_count(records)
            prediction_log_rows_replayed_total.inc(rows)
            logger.info("prediction log: %d spilled row(s) written from %s", rows, original.name)
        self.pending = False
        return True


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# At most about this many rows a write (a COPY or an executemany, one transaction), so that a request
# writing its overflow under backpressure waits for a write in progress a fraction of a second at most.
_ROWS_PER_WRITE = 5000


def _row_count(records):
    return sum(len(record.labels) if record.labels is not None and not record.error else 1 for record in records)


class PredictionLogWriter:
    def __init__(self):
        self._queue = queue.SimpleQueue()
        self._thread = None
        self._start_lock = threading.Lock()
        self._write_lock = threading.RLock()
        self._pending_rows = 0  # rows queued and not yet taken by a write
        self._pending_lock = threading.Lock()
        self._closing = threading.Event()
        # (model, version) -> numeric feature names; a version's signature never changes once registered.
        self._layouts = {}
        self.spill = LogSpill()

    def _layout(self, record):
        key = (record.model_name, record.version)
        layout = self._layouts.get(key)
        if layout is None:
            layout = _numeric_features(record.model_name, record.version) if record.version else ()
            if layout or record.version:
                self._layouts[key] = layout
        return layout

    def submit(self, record):
        if settings.PREDICTION_LOG_SYNC:
            with self._write_lock:
                self._write_or_spill([record])
            return
        self._queue.put(record)
        over = self._pending_add(_row_count([record])) - settings.PREDICTION_LOG_QUEUE_MAX
        if over > 0:
            # The log is behind (requests bring rows faster than the database takes them, or the writer
            # thread gets too little of the worker's time): the request that finds it so writes the oldest
            # records, as many rows as it brought over the bound, so the queue stays bounded and the server
            # answers no faster than its log keeps up. What goes wrong there is the log's, counted and logged
            # as the writer thread does it, never the request's answer.
            try:
                self._write_batch(over)
            except Exception:
                logger.exception("writing the prediction log failed")
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
                    self._thread.start()

    def _pending_add(self, rows):
        with self._pending_lock:
            self._pending_rows += rows
            return self._pending_rows

    def _drain(self, limit, *, rows=None):
        """Up to `limit` records off the queue, oldest first; with `rows`, only until they hold that many rows."""
        records, taken = [], 0
        while len(records) < limit and (rows is None or taken < rows):
            try:
                record = self._queue.get_nowait()
            except queue.Empty:
                break
            records.append(record)
            taken += _row_count([record])
        if records:
            self._pending_add(-taken)
        return records

    def _run(self):
        while not self._closing.wait(settings.PREDICTION_LOG_FLUSH_SECONDS):
            try:
                self._write_pending(settings.PREDICTION_LOG_BATCH)
            except Exception:  # the writer must survive anything; what it held is lost, and logged
                logger.exception("writing the prediction log failed")
        connection.close()  # the thread's own connection, ended cleanly rather than dropped with the process

    def _write_pending(self, limit):
        # Taking records off the queue and writing them happen under one lock, so flush() at exit
        # waits for a write in progress instead of losing the records it holds. The lock is let go
        # between writes, so a request writing its overflow (backpressure) waits for one write at most.
        while self._write_batch(_ROWS_PER_WRITE, limit=limit):
            pass
        with self._write_lock:
            if self.spill.pending:  # nothing new came, but batches wait on disk for the database
                self._replay()

    def _write_batch(self, rows, *, limit=None):
        """Write the oldest queued records, until they hold `rows` rows (or `limit` records); False if none."""
        with self._write_lock:
            records = self._drain(limit or settings.PREDICTION_LOG_BATCH, rows=rows)
            if records:
                self._write_or_spill(records)
            return bool(records)

    def _replay(self):
        try:
            return self.spill.replay(self._write)
        except UNAVAILABLE:
            connection.close()
            return False

    def _write_or_spill(self, records):
        """Write the batch; if the database will not take it, spill it to disk (after any batch already
        spilled, so the log keeps its order)."""
        # Shadows run now, once: a batch spilled and replayed later is not predicted again.
        records = records + [_shadow_record(r) for r in records if r.shadow is not None]
        for record in records:
            record.shadow = None
        if self.spill.pending and not self._replay():
            self.spill.save(records)
            return
        try:
            self._write(records)
            return
        except Error:
            # The thread keeps its connection between batches (opening one per batch costs more than the
            # batch); one gone stale is opened again and the batch tried once more.
            connection.close()
        except Exception:
            prediction_log_rows_lost_total.labels(reason="error").inc(_row_count(records))
            raise
        try:
            self._write(records)
        except UNAVAILABLE as exc:
            connection.close()
            logger.warning("prediction log: database unavailable (%s: %s)", type(exc).__name__, exc)
            self.spill.save(records)
        except Error as exc:
            self.spill.lost(records, "refused", f"{type(exc).__name__}: {exc}")
        except Exception:
            prediction_log_rows_lost_total.labels(reason="error").inc(_row_count(records))
            raise

    def _write(self, records):
        adapt = connection.ops.adapt_datetimefield_value
        if connection.vendor == "postgresql":
            insert, data = self._copy, "".join(_copy_lines(records, self._layout, adapt))
        else:
            vector = (
                6  # position of `features` in _COLUMNS: little-endian float64 bytes, as FloatVectorField stores them
            )
            data = []
            for record in records:
                when = adapt(record.created_at)  # the same for every row of a record
                for row in record.rows(self._layout(record)):
                    features = row[vector]
                    if features is not None:
                        features = struct.pack(f"<{len(features)}d", *features)
                    data.append((*row[:vector], features, *row[vector + 1 : -1], when))
            insert = self._insert
        if not data:
            return
        try:
            insert(data)
        except DatabaseError as exc:
            # A row for a day whose partition is not made yet (the maintenance task makes them a week
            # ahead; a clock jump or a long outage of the task can still get here): make it and retry once.
            if getattr(getattr(exc, "__cause__", None), "pgcode", None) != "23514":
                raise
            days = {record.created_at.date() for record in records}
            prediction_log_partitions_ensure(start=min(days), end=max(days))
            insert(data)

    def _copy(self, text):
        """PostgreSQL: one COPY of the rows as text (a fraction of a multi-row INSERT's time, most of it
        outside the worker's GIL), in one transaction."""
        from serving.models import PredictionLog

        table = connection.ops.quote_name(PredictionLog._meta.db_table)
        columns = ", ".join(connection.ops.quote_name(c) for c in _COLUMNS)
        with transaction.atomic(), connection.cursor() as cursor, connection.wrap_database_errors:
            cursor.cursor.copy_expert(f"COPY {table} ({columns}) FROM STDIN", io.StringIO(text))

    def _insert(self, rows):
        """SQLite: one prepared INSERT run for every row (sqlite3's executemany loops in C), one commit."""
        from serving.models import PredictionLog

        table = connection.ops.quote_name(PredictionLog._meta.db_table)
        columns = ", ".join(connection.ops.quote_name(c) for c in _COLUMNS)
        placeholders = ", ".join(["%s"] * len(_COLUMNS))
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({placeholders})", rows)  # noqa: S608

    def flush(self):
        """Write everything queued now."""
        self._write_pending(10**9)

    def close(self):
        """At exit: end the writer thread once the write it may be doing is done, then write what is queued."""
        if not settings.configured:  # a process that imported the module and never set Django up
            return
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        self.flush()


writer = PredictionLogWriter()
atexit.register(writer.close)


# --- Daily partitions and retention (PostgreSQL; SQLite keeps one table and deletes old rows) ------------

_TABLE = "serving_predictionlog"
_PARTITION_DAYS_AHEAD = 7


@dataclass(frozen=True)
class RetentionResult:
    """What one pass of the log's maintenance did."""

    created: tuple  # partitions made (names)
    dropped: tuple  # partitions dropped (names)
    deleted_rows: int  # rows deleted (SQLite, or a PostgreSQL log that is not partitioned)
    cutoff: dt.date  # the first day kept


def _partition_name(day):
    return f"{_TABLE}_p{day:%Y%m%d}"


def _partitioned():
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", [_TABLE])
        found = cursor.fetchone()
    return bool(found) and found[0] == "p"


def prediction_log_partitions():
    """The day partitions of the log on PostgreSQL, as {day: name}, oldest first; empty elsewhere."""
    if not _partitioned():
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(%s) ORDER BY c.relname",
            [_TABLE],
        )
        names = [name for (name,) in cursor.fetchall()]
    days = {}
    for name in names:
        try:
            days[dt.datetime.strptime(name.rsplit("_p", 1)[1], "%Y%m%d").date()] = name
        except (IndexError, ValueError):
            continue  # not one of ours
    return dict(sorted(days.items()))


def prediction_log_partitions_ensure(*, start, end):
    """Make the day partitions from `start` to `end` (dates, inclusive) that are missing; returns their names."""
    if not _partitioned():
        return []
    existing = prediction_log_partitions()
    created = []
    day = start
    while day <= end:
        if day not in existing:
            name = _partition_name(day)
            lower = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
            upper = lower + dt.timedelta(days=1)
            try:
                with transaction.atomic(), connection.cursor() as cursor:
                    cursor.execute(
                        f"CREATE TABLE IF NOT EXISTS {connection.ops.quote_name(name)} "  # noqa: S608
                        f"PARTITION OF {_TABLE} FOR VALUES FROM (%s) TO (%s)",
                        [lower, upper],
                    )
            except DatabaseError:
                # Another process made it at the same moment: what counts is that it exists.
                if day not in prediction_log_partitions():
                    raise
            else:
                created.append(name)
        day += dt.timedelta(days=1)
    return created


def prediction_log_retention_apply(*, keep_days=None, today=None):
    """Drop the log's days older than `keep_days` (PREDICTION_LOG_RETENTION_DAYS) and make the next week's
    partitions. On PostgreSQL a day goes as a whole partition (no row-by-row delete, no bloat); elsewhere
    the old rows are deleted. Monitoring's aggregates and sketches are kept: they outlive the raw rows."""
    from serving.models import PredictionLog

    keep_days = settings.PREDICTION_LOG_RETENTION_DAYS if keep_days is None else keep_days
    today = today or timezone.now().astimezone(dt.UTC).date()
    cutoff = today - dt.timedelta(days=keep_days)
    if not _partitioned():
        start = dt.datetime.combine(cutoff, dt.time(), tzinfo=dt.UTC)
        deleted, _ = PredictionLog.objects.filter(created_at__lt=start).delete()
        return RetentionResult(created=(), dropped=(), deleted_rows=deleted, cutoff=cutoff)
    created = prediction_log_partitions_ensure(
        start=today - dt.timedelta(days=1), end=today + dt.timedelta(days=_PARTITION_DAYS_AHEAD)
    )
    dropped = []
    for day, name in prediction_log_partitions().items():
        if day < cutoff:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(f"DROP TABLE IF EXISTS {connection.ops.quote_name(name)}")
            dropped.append(name)
    if dropped:
        logger.info("prediction log: dropped %d day partition(s) before %s", len(dropped), cutoff)
    return RetentionResult(created=tuple(created), dropped=tuple(dropped), deleted_rows=0, cutoff=cutoff)
