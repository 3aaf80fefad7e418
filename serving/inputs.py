"""Turn the request formats clients send into columns {feature: [values]}, refusing anything malformed.

No pandas here: rows are checked and transposed in plain Python, which for the small batches of
online traffic is faster than building a DataFrame.
"""

import math

from core.errors import InvalidInput, Unprocessable

_FLOAT32_MAX = 3.4028234663852886e38


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


def _check_count(n, *, max_rows, field):
    if n == 0:
        raise InvalidInput("is empty: send at least one row", field=field)
    if n > max_rows:
        raise InvalidInput(f"has {n} rows; the limit is {max_rows}", field=field)


def columns_from_records(records, features, *, max_rows, field="instances"):
    """[{feature: value}, ...] → columns; a missing or unknown feature is refused, naming it."""
    if not isinstance(records, list):
        raise InvalidInput("must be a list of objects, one per row", field=field)
    _check_count(len(records), max_rows=max_rows, field=field)
    names = [name for name, _ in features]
    known = set(names)
    columns = {name: [] for name in names}
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
            columns[name].append(_value(record[name], categorical=categorical, where=f"{field}[{index}].{name}"))
    return columns, len(records)


def columns_from_rows(rows, features, *, max_rows, field="inputs"):
    """[[v1, v2, ...], ...] in signature order → columns."""
    if not isinstance(rows, list):
        raise InvalidInput("must be a list of rows (lists of values in signature order)", field=field)
    _check_count(len(rows), max_rows=max_rows, field=field)
    columns = {name: [] for name, _ in features}
    width = len(features)
    for index, row in enumerate(rows):
        if not isinstance(row, list):
            raise InvalidInput("must be a list of values in signature order", field=f"{field}[{index}]")
        if len(row) != width:
            raise Unprocessable(f"has {len(row)} values; the model takes {width}", field=f"{field}[{index}]")
        for (name, categorical), value in zip(features, row, strict=True):
            columns[name].append(_value(value, categorical=categorical, where=f"{field}[{index}].{name}"))
    return columns, len(rows)


def columns_from_dict(data, features, *, max_rows, field="inputs"):
    """{feature: [values]} (MLflow's tensor-dict "inputs") → columns."""
    names = [name for name, _ in features]
    for name in names:
        if name not in data:
            raise Unprocessable(f"missing feature {name!r}", field=f"{field}.{name}")
        if not isinstance(data[name], list):
            raise InvalidInput("must be a list of values", field=f"{field}.{name}")
    unknown = sorted(str(key) for key in data if key not in set(names))
    if unknown:
        raise Unprocessable(f"unknown feature {unknown[0]!r}", field=f"{field}.{unknown[0]}")
    lengths = {len(data[name]) for name in names}
    if len(lengths) != 1:
        raise Unprocessable("every feature needs the same number of values", field=field)
    n = lengths.pop()
    _check_count(n, max_rows=max_rows, field=field)
    return {
        name: [_value(v, categorical=categorical, where=f"{field}.{name}[{i}]") for i, v in enumerate(data[name])]
        for name, categorical in features
    }, n


def columns_from_split(split, features, *, max_rows, field="dataframe_split"):
    """MLflow's {"columns": [...], "data": [[...]]} → columns."""
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
