"""Turn the request formats clients send into checked columns, refusing anything malformed.

Values are checked a whole column at a time: one pass over the Python types (`set(map(type, ...))`,
in C), then numpy for the numbers (infinity, the 32-bit range), so a 1,000-row request costs a few
array operations instead of a Python call per value. A column that fails the fast check is checked
again value by value, row by row, so the error names the same first bad field and row as always.
"""

import math
from dataclasses import dataclass

import numpy as np

from core.errors import InvalidInput, Unprocessable

_FLOAT32_MAX = 3.4028234663852886e38
_NUMBERS = frozenset({int, float, type(None)})
_TEXT = frozenset({str, type(None)})
_TEXT_OR_NUMBER = frozenset({str, int, float, type(None)})


@dataclass(frozen=True)
class Batch:
    """Checked rows: `columns` as sent ({feature: [values]}, None for missing; what the log keeps) and
    `arrays` as the model takes them ({feature: float64 array with NaN for missing, or object array})."""

    columns: dict
    arrays: dict
    rows: int


def _value(value, *, categorical, where):
    if value is None:
        return None  # missing: the model's imputer fills it in
    if categorical:
        if isinstance(value, str):
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Unprocessable(f"expects text, got {type(value).__name__}", field=where)
        return str(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        kind = "text" if isinstance(value, str) else type(value).__name__
        raise Unprocessable(f"expects a number, got {kind} {str(value)[:40]!r}", field=where)
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise Unprocessable("must be a finite number (no NaN or infinity)", field=where)
    if abs(number) > _FLOAT32_MAX:
        raise Unprocessable(
            f"is out of range (the model computes in 32-bit floats, up to {_FLOAT32_MAX:.3g})", field=where
        )
    return value


def _numbers(values):
    """A float64 array of a column of JSON numbers (NaN for missing), or None if any value fails a check."""
    if isinstance(values, np.ndarray):
        if values.dtype.kind not in "fiu":
            return None
        array = values.astype(np.float64, copy=False)
        return array if np.isfinite(array).all() and not (np.abs(array) > _FLOAT32_MAX).any() else None
    if not set(map(type, values)) <= _NUMBERS:
        return None  # text, booleans, lists, objects: the slow path names the first one
    try:
        array = np.array(values, dtype=np.float64)  # None becomes NaN: missing, for the imputer
    except OverflowError:  # an integer past a double's range
        return None
    with np.errstate(invalid="ignore"):
        if np.isinf(array).any() or (np.abs(array) > _FLOAT32_MAX).any():
            return None
    return array


def _texts(values):
    """The column as a list of str or None (numbers written as text), or None if any value is refused."""
    if isinstance(values, np.ndarray):
        values = values.tolist()
    types = set(map(type, values))
    if types <= _TEXT:
        return values
    if not types <= _TEXT_OR_NUMBER:
        return None  # booleans, lists, objects
    return [value if value is None or type(value) is str else str(value) for value in values]


def _checked(columns, features, n, slow):
    """Check each column whole; on the first column that fails, `slow()` raises the row-by-row error.

    The numeric columns are converted and checked together, as one [features, rows] array: for a
    single row, a few numpy calls in all rather than a few per column."""
    checked, arrays = {}, {}
    numeric = [name for name, categorical in features if not categorical]
    matrix = _numbers_together([columns[name] for name in numeric]) if numeric else None
    for name, categorical in features:
        values = columns[name]
        if categorical:
            texts = _texts(values)
            if texts is None:
                slow()
                raise Unprocessable("expects text", field=name)  # not reached: slow() names the row
            checked[name] = texts
            arrays[name] = np.array(texts, dtype=object)
        else:
            checked[name] = values.tolist() if isinstance(values, np.ndarray) else values
    if numeric:
        if matrix is None:
            for name in numeric:  # which column: slow() names its first bad row
                if _numbers(columns[name]) is None:
                    slow()
                    raise Unprocessable("expects finite numbers", field=name)  # not reached
            raise Unprocessable("expects finite numbers", field=numeric[0])  # not reached either
        for index, name in enumerate(numeric):
            arrays[name] = matrix[index]
    return Batch(columns=checked, arrays=arrays, rows=n)


def _numbers_together(columns):
    """A float64 [columns, rows] array of numeric columns (lists or arrays), or None if any value fails."""
    if any(isinstance(values, np.ndarray) for values in columns):
        arrays = [_numbers(values) for values in columns]
        return None if any(a is None for a in arrays) else np.stack(arrays)
    types = set()
    for values in columns:
        types.update(map(type, values))
    if not types <= _NUMBERS:
        return None
    try:
        matrix = np.array(columns, dtype=np.float64)  # None becomes NaN: missing, for the imputer
    except OverflowError:  # an integer past a double's range
        return None
    with np.errstate(invalid="ignore"):
        if not (np.abs(matrix) <= _FLOAT32_MAX).all(axis=None) and not _only_nan_beyond(matrix):
            return None
    return matrix


def _only_nan_beyond(matrix):
    """True when every value that is not within the 32-bit range is NaN (a missing value)."""
    with np.errstate(invalid="ignore"):
        return bool(np.all(np.isnan(matrix) | (np.abs(matrix) <= _FLOAT32_MAX)))


def _check_count(n, *, max_rows, field):
    if n == 0:
        raise InvalidInput("is empty: send at least one row", field=field)
    if n > max_rows:
        raise InvalidInput(f"has {n} rows; the limit is {max_rows}", field=field)


def _records_slow(records, features, field):
    """The row-by-row check: raises the error of the first bad row and field, as a user reads them."""
    names = [name for name, _ in features]
    known = set(names)
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise InvalidInput("must be an object of feature: value", field=f"{field}[{index}]")
        if len(record) != len(names) or record.keys() != known:
            missing = [name for name in names if name not in record]
            if missing:
                raise Unprocessable(f"missing feature {missing[0]!r}", field=f"{field}[{index}].{missing[0]}")
            unknown = sorted(str(key) for key in record if key not in known)
            raise Unprocessable(
                f"unknown feature {unknown[0]!r}; the model takes {', '.join(names)}",
                field=f"{field}[{index}].{unknown[0]}",
            )
        for name, categorical in features:
            _value(record[name], categorical=categorical, where=f"{field}[{index}].{name}")


def columns_from_records(records, features, *, max_rows, field="instances"):
    """[{feature: value}, ...] → Batch; a missing or unknown feature is refused, naming it."""
    if not isinstance(records, list):
        raise InvalidInput("must be a list of objects, one per row", field=field)
    _check_count(len(records), max_rows=max_rows, field=field)
    names = [name for name, _ in features]
    known = set(names)
    width = len(names)

    def slow():
        _records_slow(records, features, field)

    for record in records:
        if type(record) is not dict or len(record) != width or record.keys() != known:
            slow()
    columns = {name: [record[name] for record in records] for name in names}
    return _checked(columns, features, len(records), slow)


def _rows_slow(rows, features, field):
    width = len(features)
    for index, row in enumerate(rows):
        if not isinstance(row, list):
            raise InvalidInput("must be a list of values in signature order", field=f"{field}[{index}]")
        if len(row) != width:
            raise Unprocessable(f"has {len(row)} values; the model takes {width}", field=f"{field}[{index}]")
        for (name, categorical), value in zip(features, row, strict=True):
            _value(value, categorical=categorical, where=f"{field}[{index}].{name}")


def columns_from_rows(rows, features, *, max_rows, field="inputs"):
    """[[v1, v2, ...], ...] in signature order → Batch."""
    if not isinstance(rows, list):
        raise InvalidInput("must be a list of rows (lists of values in signature order)", field=field)
    _check_count(len(rows), max_rows=max_rows, field=field)
    width = len(features)

    def slow():
        _rows_slow(rows, features, field)

    for row in rows:
        if type(row) is not list or len(row) != width:
            slow()
    transposed = zip(*rows, strict=True)
    columns = {name: list(values) for (name, _), values in zip(features, transposed, strict=True)}
    return _checked(columns, features, len(rows), slow)


def columns_from_dict(data, features, *, max_rows, field="inputs"):
    """{feature: [values]} (MLflow's tensor-dict "inputs", one OIP tensor per feature) → Batch.

    A column may also be a numpy array (a binary OIP tensor), checked without a Python loop."""
    names = [name for name, _ in features]
    for name in names:
        if name not in data:
            raise Unprocessable(f"missing feature {name!r}", field=f"{field}.{name}")
        if not isinstance(data[name], list | np.ndarray):
            raise InvalidInput("must be a list of values", field=f"{field}.{name}")
    unknown = sorted(str(key) for key in data if key not in set(names))
    if unknown:
        raise Unprocessable(f"unknown feature {unknown[0]!r}", field=f"{field}.{unknown[0]}")
    lengths = {len(data[name]) for name in names}
    if len(lengths) != 1:
        raise Unprocessable("every feature needs the same number of values", field=field)
    n = lengths.pop()
    _check_count(n, max_rows=max_rows, field=field)

    def slow():
        for name, categorical in features:
            values = data[name]
            for i, v in enumerate(values.tolist() if isinstance(values, np.ndarray) else values):
                _value(v, categorical=categorical, where=f"{field}.{name}[{i}]")

    return _checked(data, features, n, slow)


def columns_from_split(split, features, *, max_rows, field="dataframe_split"):
    """MLflow's {"columns": [...], "data": [[...]]} → Batch."""
    if not isinstance(split, dict) or not isinstance(split.get("data"), list):
        raise InvalidInput('must be {"columns": [...], "data": [[...], ...]}', field=field)
    columns = split.get("columns")
    if columns is None:
        return columns_from_rows(split["data"], features, max_rows=max_rows, field=f"{field}.data")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise InvalidInput("must be a list of column names", field=f"{field}.columns")
    rows = split["data"]
    for index, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(columns):
            raise InvalidInput(f"must have {len(columns)} values, one per column", field=f"{field}.data[{index}]")
    return columns_from_records(
        [dict(zip(columns, row, strict=True)) for row in rows], features, max_rows=max_rows, field=f"{field}.data"
    )
