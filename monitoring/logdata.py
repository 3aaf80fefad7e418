"""Reading the prediction log fast: one version's rows of a time range as numpy arrays.

On PostgreSQL the typed feature vector (`float8[]`) and the confidence come out through a binary COPY,
an hour of the window at a time, parsed by numpy as fixed-width records (no per-row Python work, and a
third of the time of the same numbers out of the JSON inputs); anything that does not fit the fixed
layout (a NULL element, a row of another width) falls back to the driver. On SQLite the vector is
float64 bytes. Categorical features stay in the JSON inputs and are read per key.
"""

import datetime as dt
import io
import json
import math
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from django.db import connection
from django.db.models.fields.json import KT

from serving.models import PredictionLog

_TABLE = PredictionLog._meta.db_table
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"


def _scope(*, model_name, version, start, end):
    return PredictionLog.objects.filter(
        model_name=model_name, version=version, created_at__gte=start, created_at__lt=end, error=""
    )


def _copy_binary(sql, params):
    """The body of `COPY (sql) TO STDOUT (FORMAT binary)`: the tuples, without header and trailer."""
    with connection.cursor() as cursor:
        query = cursor.cursor.mogrify(sql, params).decode()
        buffer = io.BytesIO()
        cursor.cursor.copy_expert(f"COPY ({query}) TO STDOUT (FORMAT binary)", buffer)
    data = buffer.getbuffer()
    if bytes(data[:11]) != _COPY_SIGNATURE:
        raise ValueError("unexpected COPY output")
    (extension,) = struct.unpack(">i", data[15:19])
    return data[19 + extension : len(data) - 2]  # the trailer is a field count of -1


def _where_sql():
    return (
        f"FROM {_TABLE} WHERE model_name = %s AND version = %s AND created_at >= %s AND created_at < %s AND error = ''"
    )


_MAX_CHUNKS = 48


def _time_slices(start, end):
    # A window is read an hour at a time (at most 48 COPYs), so the raw bytes in memory at once stay small.
    count = max(1, min(_MAX_CHUNKS, math.ceil((end - start).total_seconds() / 3600)))
    step = (end - start) / count
    bounds = [start + step * index for index in range(count)] + [end]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _vectors_record(width):
    """One COPY tuple of (created_at, features float8[width], confidence, predicted class position): fixed
    width when no element of the vector is NULL (the writer stores NaN)."""
    return np.dtype(
        [
            ("fields", ">i2"),
            ("moment_length", ">i4"),
            ("micros", ">i8"),
            ("length", ">i4"),
            ("ndim", ">i4"),
            ("has_nulls", ">i4"),
            ("element_type", ">u4"),
            ("size", ">i4"),
            ("lower", ">i4"),
            ("elements", [("length", ">i4"), ("value", ">f8")], (width,)),
            ("confidence_length", ">i4"),
            ("confidence", ">f8"),
            ("position_length", ">i4"),
            ("position", ">i4"),
        ]
    )


# The predicted class's position; -1 where the writer did not store it (rows from before it did: see
# predicted_class_counts), -2 where there is no prediction.
_POSITION_SQL = "coalesce(predicted_index::int4, CASE WHEN prediction IS NULL THEN -2 ELSE -1 END)"


def _vectors_postgres(model_name, version, start, end, width):
    slices = _time_slices(start, end)
    if connection.in_atomic_block or len(slices) < 2:
        return _vectors_postgres_slices(model_name, version, slices, width)
    # Two connections read alternate hours at once: PostgreSQL's sending of the arrays is most of the
    # time, and a second backend does it on the second core.

    def on_own_connection(part):
        try:
            return _vectors_postgres_slices(model_name, version, part, width)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=2) as pool:
        parts = list(pool.map(on_own_connection, [slices[0::2], slices[1::2]]))
    return [chunk for part in parts for chunk in part]


def _vectors_postgres_slices(model_name, version, slices, width):
    record = _vectors_record(width)
    sql = (
        f"SELECT created_at, features, coalesce(confidence, 'NaN'), {_POSITION_SQL} {_where_sql()}"
        " AND features IS NOT NULL"
    )
    chunks = []
    for lower, upper in slices:
        params = [model_name, version, lower, upper]
        body = _copy_binary(sql, params)
        if len(body) % record.itemsize == 0:
            rows = np.frombuffer(body, dtype=record)
            if (
                (rows["length"] == 20 + 12 * width).all()
                and (rows["size"] == width).all()
                and (rows["elements"]["length"] == 8).all()
                and (rows["confidence_length"] == 8).all()
            ):
                chunks.append(
                    _Chunk(
                        features=rows["elements"]["value"].astype(np.float64),
                        confidence=rows["confidence"].astype(np.float64),
                        positions=rows["position"].astype(np.int32),
                        micros=rows["micros"].astype(np.int64),
                    )
                )
                continue
        # Not the fixed layout (NULL elements, another width): the driver's parsing, slower but general.
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            chunks.append(_chunk_of_rows(cursor.fetchall(), width))
    return chunks


@dataclass
class _Chunk:
    features: np.ndarray  # rows x width, float64
    confidence: np.ndarray
    positions: np.ndarray
    micros: np.ndarray

    def __len__(self):
        return len(self.confidence)


def _chunk_of_rows(rows, width):
    """A chunk from (created_at, vector, confidence, position) rows, the slow way (ORM, odd layouts)."""
    rows = [(moment, vector, confidence, position) for moment, vector, confidence, position in rows]
    features = np.full((len(rows), width), np.nan)
    for index, (_, vector, _, _) in enumerate(rows):
        if vector is not None and len(vector) == width:
            features[index] = [np.nan if v is None else v for v in vector]
    return _Chunk(
        features=features,
        confidence=np.array([np.nan if row[2] is None else row[2] for row in rows], dtype=np.float64),
        positions=np.array([row[3] for row in rows], dtype=np.int32),
        micros=np.array([_micros(row[0]) for row in rows], dtype=np.int64),
    )


class WindowColumns:
    """A window's typed vectors with each row's confidence, time and predicted class, kept in the chunks they
    were read in; one column is joined at a time, so a million rows never sit in memory twice."""

    def __init__(self, chunks, width):
        self._chunks = [chunk for chunk in chunks if len(chunk)]
        self.width = width
        self.rows = sum(len(chunk) for chunk in self._chunks)

    def _joined(self, pick, dtype):
        if not self._chunks:
            return np.empty(0, dtype=dtype)
        return np.concatenate([pick(chunk) for chunk in self._chunks])

    def column(self, index):
        """All values of feature `index` (NaN where missing), as one contiguous float64 array."""
        return self._joined(lambda chunk: chunk.features[:, index], np.float64)

    def confidence(self):
        """The confidence of every row (NaN where none was logged)."""
        return self._joined(lambda chunk: chunk.confidence, np.float64)

    def micros(self):
        """When each row was logged, in microseconds since 2000-01-01 UTC."""
        return self._joined(lambda chunk: chunk.micros, np.int64)

    def positions(self):
        """Each row's predicted class, as its position among the version's classes (-1 unknown, -2 none)."""
        return self._joined(lambda chunk: chunk.positions, np.int32).astype(np.int64)

    def class_counts(self, classes, *, scope):
        """{class: rows}; rows logged before the writer stored positions are counted from their JSON."""
        positions = self.positions()
        counts = np.bincount(positions[positions >= 0], minlength=len(classes))
        result = {label: int(n) for label, n in zip(classes, counts, strict=False) if n}
        if (positions == -1).any():
            for label, n in predicted_class_counts(**scope, classes=classes, unindexed_only=True).items():
                result[label] = result.get(label, 0) + n
        return result


def _micros(moment):
    return (moment - _EPOCH_2000) // dt.timedelta(microseconds=1)


def window_columns(*, model_name, version, start, end, width):
    """The typed vectors (and confidence, time, predicted class) of one version's successful rows in [start, end)."""
    if connection.vendor == "postgresql" and width:
        return WindowColumns(_vectors_postgres(model_name, version, start, end, width), width)
    # SQLite, or a model without numeric features: the ORM (volumes where it does not matter).
    rows = _scope(model_name=model_name, version=version, start=start, end=end).values_list(
        "created_at", "features", "confidence", "predicted_index", "prediction"
    )
    rows = [
        (moment, features, confidence, (-2 if prediction is None else -1) if position is None else position)
        for moment, features, confidence, position, prediction in rows
    ]
    return WindowColumns([_chunk_of_rows(rows, width)], width)


def reference_values(column_id):
    """A reference column's sorted values (float64); on PostgreSQL through a binary COPY (bytea as is,
    where a plain SELECT would hex-encode 8 MB for a million rows)."""
    from monitoring.models import ReferenceColumn

    if connection.vendor == "postgresql":
        body = _copy_binary(f"SELECT sorted_values FROM {ReferenceColumn._meta.db_table} WHERE id = %s", [column_id])
        (length,) = struct.unpack(">i", body[2:6])
        return np.frombuffer(body[6 : 6 + length] if length > 0 else b"", dtype="<f8")
    stored = ReferenceColumn.objects.filter(pk=column_id).values_list("sorted_values", flat=True).first()
    return np.frombuffer(stored or b"", dtype="<f8")


def categorical_columns(*, model_name, version, start, end, names, with_hours=False):
    """{feature: [value or None, ...]} of categorical features, read from the JSON inputs; with `with_hours`,
    {feature: {hour: [values]}}."""
    if not names:
        return {}
    scope = _scope(model_name=model_name, version=version, start=start, end=end).exclude(inputs=None)
    annotations = {f"c{index}": KT(f"inputs__{name}") for index, name in enumerate(names)}
    rows = list(scope.annotate(**annotations).values_list("created_at", *annotations))
    if not with_hours:
        return {name: [row[index + 1] for row in rows] for index, name in enumerate(names)}
    result = {name: {} for name in names}
    for row in rows:
        hour = row[0].astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
        for index, name in enumerate(names):
            result[name].setdefault(hour, []).append(row[index + 1])
    return result


def predicted_class_counts(*, model_name, version, start, end, classes, unindexed_only=False):
    """{predicted class: rows} of the version's successful rows (`classes`: its labels in signature order)."""
    from django.db.models import Count

    scope = _scope(model_name=model_name, version=version, start=start, end=end).exclude(prediction=None)
    if unindexed_only:
        scope = scope.filter(predicted_index=None)
    counts, unindexed = {}, 0
    for position, n in scope.values_list("predicted_index").annotate(n=Count("id")).order_by():
        if position is None:
            unindexed = n
        elif 0 <= position < len(classes):
            counts[classes[position]] = counts.get(classes[position], 0) + n
    if unindexed:  # rows logged before the writer stored the class's position
        for prediction, n in (
            scope.filter(predicted_index=None).values_list("prediction").annotate(n=Count("id")).order_by()
        ):
            counts[str(prediction)] = counts.get(str(prediction), 0) + n
    return counts


# --- Traffic: what the hourly aggregates count -----------------------------------------------------------

MODES = ("", "primary", "canary", "shadow", "direct")
_EPOCH_2000 = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_TRAFFIC = np.dtype(
    [
        ("micros", "i8"),  # since 2000-01-01 UTC, as PostgreSQL keeps a timestamptz
        ("version", "i4"),
        ("mode", "i4"),  # index into MODES, -1 for another
        ("row", "i4"),
        ("latency", "f8"),
        ("confidence", "f8"),  # NaN where none
        ("error", "?"),
        ("prediction", "i4"),  # position among the version's classes, -1 for another, -2 for none
    ]
)
# One fixed-width COPY tuple a row: time, the small integers packed into one int8, latency, confidence.
# (Four fields rather than eight: PostgreSQL sends a quarter fewer bytes and fields a row.)
_TRAFFIC_COPY = np.dtype(
    [
        ("fields", ">i2"),
        ("l0", ">i4"),
        ("micros", ">i8"),
        ("l1", ">i4"),
        ("packed", ">i8"),  # version << 32 | mode's initial << 24 | error << 23 | request << 22 | position + 2
        ("l2", ">i4"),
        ("latency", ">f8"),
        ("l3", ">i4"),
        ("confidence", ">f8"),
    ]
)


def _traffic_sql(classes):
    # The mode by its first letter (the modes' initials differ), cheaper per row than comparing strings.
    return (
        "SELECT created_at, (version::int8 << 32) | (ascii(deployment_mode)::int8 << 24)"
        " | (CASE WHEN error <> '' THEN 8388608 ELSE 0 END) | (CASE WHEN row = 0 THEN 4194304 ELSE 0 END)"
        f" | ({_traffic_position_sql(classes)} + 2), latency_ms, coalesce(confidence, 'NaN')"
        f" FROM {_TABLE} WHERE model_name = %s AND created_at >= %s AND created_at < %s"
    )


def _traffic_position_sql(classes):
    # The writer stores the class's position; rows logged before it did are matched by their JSON (as
    # text, PostgreSQL's own rendering of the label folded once: comparing jsonb values costs far more).
    matches = " ".join(
        f"WHEN version = {int(version)} AND prediction::text = (%s::jsonb)::text THEN {position}"
        for version, labels in sorted(classes.items())
        for position in range(len(labels))
    )
    return f"coalesce(predicted_index::int4, CASE WHEN prediction IS NULL THEN -2 {matches} ELSE -1 END)"


_MODE_BY_INITIAL = {0: 0, **{ord(mode[0]): index for index, mode in enumerate(MODES) if mode}}


def _traffic_postgres(model_name, slices, classes):
    sql = _traffic_sql(classes)
    labels = [json.dumps(label) for _, labels in sorted(classes.items()) for label in labels]
    initials = np.full(128, -1, dtype=np.int32)
    for initial, index in _MODE_BY_INITIAL.items():
        initials[initial] = index
    parts = []
    for lower, upper in slices:
        body = _copy_binary(sql, [*labels, model_name, lower, upper])
        rows = np.frombuffer(body, dtype=_TRAFFIC_COPY)
        packed = rows["packed"].astype(np.int64)
        part = np.empty(len(rows), dtype=_TRAFFIC)
        part["micros"] = rows["micros"]
        part["version"] = packed >> 32
        part["mode"] = initials[(packed >> 24) & 127]
        part["error"] = (packed >> 23) & 1
        part["row"] = 1 - ((packed >> 22) & 1)  # 0 for a request's first row, which is all that is counted
        part["prediction"] = (packed & 0x3FFFFF) - 2
        part["latency"] = rows["latency"]
        part["confidence"] = rows["confidence"]
        parts.append(part)
    return parts


def traffic(*, model_name, start, end, classes):
    """Every logged row of a model in [start, end) (errors too) as a numpy record array (see _TRAFFIC);
    `classes` gives each version's class labels, in its signature's order."""
    slices = _time_slices(start, end)
    if connection.vendor == "postgresql":
        if connection.in_atomic_block or len(slices) < 2:
            parts = _traffic_postgres(model_name, slices, classes)
        else:

            def on_own_connection(part):
                try:
                    return _traffic_postgres(model_name, part, classes)
                finally:
                    connection.close()

            with ThreadPoolExecutor(max_workers=2) as pool:
                parts = [p for part in pool.map(on_own_connection, [slices[0::2], slices[1::2]]) for p in part]
        return np.concatenate(parts) if parts else np.empty(0, dtype=_TRAFFIC)
    positions = {
        version: {label: position for position, label in enumerate(labels)} for version, labels in classes.items()
    }
    modes = {mode: position for position, mode in enumerate(MODES)}
    rows = PredictionLog.objects.filter(model_name=model_name, created_at__gte=start, created_at__lt=end).values_list(
        "created_at",
        "version",
        "deployment_mode",
        "row",
        "latency_ms",
        "confidence",
        "error",
        "prediction",
        "predicted_index",
    )
    result = np.empty(len(rows), dtype=_TRAFFIC)
    for index, (moment, version, mode, row, latency, confidence, error, prediction, position) in enumerate(rows):
        if position is None:
            position = -2 if prediction is None else positions.get(version, {}).get(str(prediction), -1)
        result[index] = (
            (moment - _EPOCH_2000) // dt.timedelta(microseconds=1),
            version,
            modes.get(mode, -1),
            row,
            latency,
            np.nan if confidence is None else confidence,
            bool(error),
            position,
        )
    return result


def hour_of_micros(micros):
    """The UTC hour (a datetime) of a count of microseconds since 2000-01-01."""
    return _EPOCH_2000 + dt.timedelta(hours=int(micros // 3_600_000_000))
