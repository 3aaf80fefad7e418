"""What a model version expects and what its training data looked like."""

import math

import numpy as np
import pandas as pd

_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
_HISTOGRAM_BINS = 10
_MAX_CATEGORIES = 50


def signature_build(*, dataset, classes):
    """Feature names and dtypes in the order the model takes them, the target and the class labels."""
    return {
        "features": [
            {"name": column["name"], "dtype": column["dtype"]}
            for column in dataset.schema["columns"]
            if column["name"] != dataset.target
        ],
        "target": dataset.target,
        "classes": [str(label) for label in classes],
    }


def _finite(value):
    value = float(value)
    return value if math.isfinite(value) else None


def reference_stats_compute(frame, *, features):
    """Per-feature statistics of the training data, the baseline for drift checks.

    Numeric: count, nulls, mean, std, min, max, quantiles and a 10-bin equal-width histogram.
    Categorical: count, nulls and the frequency of each of the 50 commonest values ("__other__" for the rest).
    """
    stats = {"n_rows": int(len(frame)), "features": {}}
    for name in features:
        series = frame[name]
        non_null = series.dropna()
        entry = {"count": int(len(non_null)), "null_count": int(series.isna().sum())}
        if pd.api.types.is_numeric_dtype(series):
            values = non_null.to_numpy(dtype="float64")
            entry["kind"] = "numeric"
            if len(values):
                counts, edges = np.histogram(values, bins=_HISTOGRAM_BINS)
                entry.update(
                    mean=_finite(values.mean()),
                    std=_finite(values.std(ddof=1)) if len(values) > 1 else 0.0,
                    min=_finite(values.min()),
                    max=_finite(values.max()),
                    quantiles={str(q): _finite(np.quantile(values, q)) for q in _QUANTILES},
                    histogram={"edges": [float(edge) for edge in edges], "counts": [int(c) for c in counts]},
                )
        else:
            frequencies = non_null.astype(str).value_counts()
            top = frequencies.head(_MAX_CATEGORIES)
            entry["kind"] = "categorical"
            entry["frequencies"] = {str(key): int(count) for key, count in top.items()}
            if len(frequencies) > len(top):
                entry["frequencies"]["__other__"] = int(frequencies.iloc[len(top) :].sum())
        stats["features"][name] = entry
    return stats
