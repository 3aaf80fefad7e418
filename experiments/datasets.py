"""Datasets as data: built-in makers, CSV parsing, schema inference and validation.

Pure functions over pandas frames and bytes; the database side (DatasetVersion
rows, files under ARTIFACT_ROOT) is in services.
"""

import csv
import hashlib
import io
import re

import numpy as np
import pandas as pd
from sklearn import datasets as sk_datasets

from core.errors import InvalidInput

# A numeric column whose values parse as numbers this often is numeric, and the rest is junk.
_NUMERIC_SHARE = 0.8
# Above this many distinct values a numeric target is a regression target, which we do not train.
_MAX_CLASSES = 50
_MAX_CATEGORIES_LISTED = 50


class DataValidationError(InvalidInput):
    """Data that does not match its schema; names the column and the problem."""


def _snake(name):
    return re.sub(r"[^0-9a-zA-Z]+", "_", str(name)).strip("_").lower()


def _from_sklearn(loader):
    bunch = loader(as_frame=True)
    frame = bunch.frame.rename(columns=_snake)
    frame["target"] = np.asarray(bunch.target_names)[bunch.target.to_numpy()]
    return frame


def make_customer_churn(*, n_samples=2000, seed=42):
    """A synthetic churn table with named customer features, the same for the same seed and size."""
    rng = np.random.default_rng(seed)
    contract = rng.choice(["month_to_month", "one_year", "two_year"], size=n_samples, p=[0.55, 0.25, 0.2])
    internet = rng.choice(["dsl", "fiber", "none"], size=n_samples, p=[0.4, 0.45, 0.15])
    payment = rng.choice(
        ["electronic_check", "credit_card", "bank_transfer", "mailed_check"], size=n_samples, p=[0.35, 0.25, 0.25, 0.15]
    )
    tenure = rng.integers(0, 73, size=n_samples)
    base_charge = np.select([internet == "fiber", internet == "dsl"], [85.0, 55.0], 25.0)
    monthly = np.round(base_charge + rng.normal(0, 12, size=n_samples).clip(-20, 35), 2)
    total = np.round(monthly * tenure + rng.normal(0, 30, size=n_samples).clip(-60, 60), 2).clip(0)
    support_calls = rng.poisson(1.2 + (internet == "fiber") * 0.8, size=n_samples)
    num_products = rng.integers(1, 6, size=n_samples)
    age = rng.integers(18, 81, size=n_samples)
    paperless = rng.integers(0, 2, size=n_samples)
    logit = (
        -1.2
        + 1.6 * (contract == "month_to_month")
        - 1.1 * (contract == "two_year")
        - 0.045 * tenure
        + 0.018 * (monthly - 60)
        + 0.45 * support_calls
        + 0.5 * (payment == "electronic_check")
        - 0.25 * (num_products - 1)
        + 0.3 * paperless
        + rng.normal(0, 0.6, size=n_samples)
    )
    churned = rng.random(n_samples) < 1 / (1 + np.exp(-logit))
    return pd.DataFrame(
        {
            "tenure_months": tenure,
            "monthly_charges": monthly,
            "total_charges": total,
            "support_calls": support_calls,
            "num_products": num_products,
            "age": age,
            "paperless_billing": paperless,
            "contract_type": contract,
            "internet_service": internet,
            "payment_method": payment,
            "churned": np.where(churned, "yes", "no"),
        }
    )


# name -> (maker, target column, whether it takes n_samples/seed)
BUILTIN_DATASETS = {
    "iris": (lambda **_: _from_sklearn(sk_datasets.load_iris), "target", False),
    "wine": (lambda **_: _from_sklearn(sk_datasets.load_wine), "target", False),
    "breast_cancer": (lambda **_: _from_sklearn(sk_datasets.load_breast_cancer), "target", False),
    "customer_churn": (make_customer_churn, "churned", True),
}
CUSTOMER_CHURN_MAX_SAMPLES = 1_000_000


def builtin_frame(name, *, n_samples=None, seed=None):
    """Make a built-in dataset; returns (frame, target column, the build params used)."""
    if name not in BUILTIN_DATASETS:
        raise InvalidInput(f"unknown built-in dataset {name!r}", field="dataset")
    maker, target, sized = BUILTIN_DATASETS[name]
    if not sized:
        if n_samples is not None:
            raise InvalidInput(
                f"the {name} dataset has a fixed size; n_samples applies to customer_churn", field="n_samples"
            )
        return maker(), target, {}
    n_samples = 2000 if n_samples is None else n_samples
    seed = 42 if seed is None else seed
    if not isinstance(n_samples, int) or not 10 <= n_samples <= CUSTOMER_CHURN_MAX_SAMPLES:
        raise InvalidInput(f"must be an integer from 10 to {CUSTOMER_CHURN_MAX_SAMPLES}", field="n_samples")
    if not isinstance(seed, int) or seed < 0:
        raise InvalidInput("must be a non-negative integer", field="seed")
    return maker(n_samples=n_samples, seed=seed), target, {"n_samples": n_samples, "seed": seed}


def frame_to_csv_bytes(frame):
    """The canonical CSV bytes of a frame, the content a built-in dataset is hashed by."""
    return frame.to_csv(index=False, lineterminator="\n").encode()


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def check_size(size, *, max_bytes):
    if size > max_bytes:
        raise InvalidInput(f"is {size:,} bytes; the limit is {max_bytes:,} bytes", field="file")


def check_csv_head(head, *, target):
    """The checks the first bytes of a large upload allow before a worker reads the rest: not empty, not
    binary, UTF-8, and the target column in its header (InvalidInput naming the problem, as parse_csv)."""
    if not head.strip():
        raise InvalidInput("is empty", field="file")
    if b"\x00" in head:
        raise InvalidInput("is binary, not a CSV text file", field="file")
    complete = head[: head.rfind(b"\n") + 1] or head  # a multi-byte character cut at the end is not an error
    try:
        text = complete.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"is not UTF-8 text (byte {exc.start})", field="file") from None
    header = next((r for r in csv.reader(io.StringIO(text, newline=None)) if not _is_blank_record(r)), [])
    header = [name.lstrip(" ") for name in header]  # as pandas reads them (skipinitialspace)
    if target not in header:
        raise InvalidInput(f"column {target!r} is not in the file (columns: {', '.join(header[:20])})", field="target")


def parse_csv(data, *, target, max_bytes):
    """Parse uploaded CSV bytes into a typed frame, or raise InvalidInput naming the problem."""
    check_size(len(data), max_bytes=max_bytes)
    if not data.strip():
        raise InvalidInput("is empty", field="file")
    if b"\x00" in data[:1_000_000]:
        raise InvalidInput("is binary, not a CSV text file", field="file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"is not UTF-8 text (byte {exc.start})", field="file") from None
    try:
        raw = _read_raw(text)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise InvalidInput(f"is not a valid CSV: {str(exc).strip()}", field="file") from None
    header = list(raw.columns)
    try:
        # The header as written (pandas renames duplicates); newline=None reads old Mac "\r" files too.
        header_line = next((r for r in csv.reader(io.StringIO(text, newline=None)) if not _is_blank_record(r)), [])
    except csv.Error as exc:
        raise InvalidInput(f"is not a valid CSV: {exc}", field="file") from None
    names = [name.lstrip(" ") for name in header_line]  # as skipinitialspace reads them
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InvalidInput(f"has duplicate column names: {', '.join(duplicates)}", field="file")
    if any(not name.strip() for name in names):
        raise InvalidInput("has a column with no name in its header", field="file")
    if raw.empty:
        raise InvalidInput("has a header but no rows", field="file")
    if len(header) < 2:
        raise InvalidInput("needs at least one feature column and the target column", field="file")
    if target not in header:
        raise InvalidInput(f"column {target!r} is not in the file (columns: {', '.join(header[:20])})", field="target")
    frame = _typed_frame(raw, lines=_record_lines(text, n_records=len(raw)))
    _check_target(frame, target)
    return frame


def _read_raw(text):
    """Every cell as a string, read the same way at upload and at training.

    "NA" and "None" are values, not missing ones, and spaces after a comma are not part of a value.
    """
    return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=True)


def _is_blank_record(record):
    # pandas skips a blank or whitespace-only line; the csv module yields [] or ["  "] for it.
    return not record or (len(record) == 1 and record[0] != "" and not record[0].strip())


def _record_lines(text, *, n_records):
    """The file line (1-based) each data row starts on, or None if it cannot be told for sure.

    pandas numbers rows without the blank lines it skips, and a quoted value can span lines.
    """
    reader = csv.reader(io.StringIO(text, newline=None))
    starts = []
    end = 0
    try:
        for record in reader:
            start, end = end + 1, reader.line_num
            if not _is_blank_record(record):
                starts.append(start)
    except csv.Error:
        return None
    data_starts = starts[1:]  # the first record is the header
    return data_starts if len(data_starts) == n_records else None


def _where(lines, index):
    """Where row `index` (0-based) is in the file, as a person finds it."""
    return f"line {lines[index]}" if lines else f"data row {index + 1}"


def _typed_frame(raw, *, lines=None):
    """Turn string columns that are numbers into numbers; junk in a numeric column is an error.

    `lines` maps row positions to file lines for the messages (see _record_lines).
    """
    frame = pd.DataFrame(index=raw.index)
    for column in raw.columns:
        values = raw[column].str.strip()
        present = values != ""
        numbers = pd.to_numeric(values.where(present), errors="coerce")
        n_present = int(present.sum())
        n_numeric = int(numbers.notna().sum())
        if n_present and n_numeric / n_present >= _NUMERIC_SHARE:
            bad = values[present & numbers.isna()]
            if len(bad):
                raise DataValidationError(
                    f"column {column!r} is numeric but {_where(lines, int(bad.index[0]))} holds {bad.iloc[0][:40]!r}"
                    f" ({len(bad)} non-numeric value{'s' if len(bad) > 1 else ''})",
                    field="file",
                )
            infinite = values[np.isinf(numbers)]
            if len(infinite):
                # A schema is JSON, which has no infinity, and no estimator trains on one.
                raise DataValidationError(
                    f"column {column!r} holds {infinite.iloc[0][:40]!r} at {_where(lines, int(infinite.index[0]))};"
                    f" numbers must be finite ({len(infinite)} value{'s are' if len(infinite) > 1 else ' is'} not)",
                    field="file",
                )
            frame[column] = numbers
        else:
            frame[column] = values.where(present, None).astype(object)
    return frame


def _check_target(frame, target):
    labels = frame[target]
    if labels.isna().any():
        raise DataValidationError(
            f"target column {target!r} has {int(labels.isna().sum())} empty values", field="target"
        )
    n_classes = labels.nunique()
    if n_classes < 2:
        raise DataValidationError(f"target column {target!r} has a single class", field="target")
    if n_classes > _MAX_CLASSES:
        raise DataValidationError(
            f"target column {target!r} has {n_classes} distinct values; only classification is supported"
            f" (at most {_MAX_CLASSES} classes)",
            field="target",
        )


def _finite_or_none(value):
    """A float for the JSON schema; None when it is not finite (the mean of values near 1e308 overflows)."""
    value = float(value)
    return value if np.isfinite(value) else None


def infer_schema(frame, *, target):
    """Columns with dtype, range and null count, and the target's class balance."""
    columns = []
    for name in frame.columns:
        series = frame[name]
        column = {"name": name, "null_count": int(series.isna().sum()), "n_unique": int(series.nunique())}
        if pd.api.types.is_numeric_dtype(series):
            non_null = series.dropna()
            is_int = bool(len(non_null)) and bool((non_null == np.floor(non_null)).all())
            with np.errstate(over="ignore"):
                mean = _finite_or_none(non_null.mean()) if len(non_null) else None
                std = _finite_or_none(non_null.std()) if len(non_null) > 1 else None
            column.update(
                dtype="integer" if is_int else "float",
                min=float(non_null.min()) if len(non_null) else None,
                max=float(non_null.max()) if len(non_null) else None,
                mean=mean,
                std=std,
            )
        else:
            counts = series.value_counts()
            column.update(dtype="categorical", categories=[str(c) for c in counts.index[:_MAX_CATEGORIES_LISTED]])
        columns.append(column)
    balance = frame[target].astype(str).value_counts().sort_index()
    return {
        "columns": columns,
        "target": target,
        "n_rows": int(len(frame)),
        "class_balance": {str(k): int(v) for k, v in balance.items()},
    }


def read_frame(data, schema):
    """Read a stored CSV back as it was read when it was stored, with the dtypes its schema records.

    A numeric column holding text is left as text, for validate_frame to name.
    """
    raw = _read_raw(data.decode("utf-8-sig"))
    numeric = {c["name"] for c in schema["columns"] if c["dtype"] != "categorical"}
    frame = pd.DataFrame(index=raw.index)
    for column in raw.columns:
        values = raw[column].str.strip()
        present = values != ""
        numbers = pd.to_numeric(values.where(present), errors="coerce")
        if column in numeric and not (present & numbers.isna()).any():
            frame[column] = numbers
        else:
            frame[column] = values.where(present, None).astype(object)
    return frame


def validate_frame(frame, schema):
    """Check a frame against a schema; raise DataValidationError naming the column and the problem."""
    expected = [c["name"] for c in schema["columns"]]
    missing = [name for name in expected if name not in frame.columns]
    if missing:
        raise DataValidationError(f"column {missing[0]!r} is missing", field="dataset")
    if len(frame) != schema["n_rows"]:
        raise DataValidationError(f"has {len(frame)} rows; its schema says {schema['n_rows']}", field="dataset")
    for column in schema["columns"]:
        series = frame[column["name"]]
        name = column["name"]
        if column["dtype"] in ("integer", "float"):
            if not pd.api.types.is_numeric_dtype(series):
                raise DataValidationError(f"column {name!r} should be numeric but holds text", field="dataset")
            non_null = series.dropna()
            if (
                len(non_null)
                and column["min"] is not None
                and (non_null.min() < column["min"] or non_null.max() > column["max"])
            ):
                raise DataValidationError(
                    f"column {name!r} has values outside its range [{column['min']}, {column['max']}]", field="dataset"
                )
        null_count = int(series.isna().sum())
        if null_count != column["null_count"]:
            raise DataValidationError(
                f"column {name!r} has {null_count} empty values; its schema says {column['null_count']}",
                field="dataset",
            )
