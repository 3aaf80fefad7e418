"""Evidently 0.7's column drift tests, computed the way Evidently computes them, from samples kept sorted.

What Evidently does (`src/evidently/legacy/calculations/stattests/`, `data_drift.get_one_column_drift`,
read for evidently==0.7.23, the version pinned in bench/requirements-evidently.txt):

- Each column is cleaned first: ±inf become NaN and every NaN / null is dropped, in reference and current.
  An empty column after that is an error in Evidently; here it is "not enough data".
- The default test depends on the reference size (after cleaning) and the distinct values of both pooled:
  reference ≤ 1,000 rows: numeric → KS (chi-square if 3–5 values, z if ≤ 2), categorical → chi-square
  (z if ≤ 2 values); larger: numeric → normalised Wasserstein (Jensen–Shannon if ≤ 5 values),
  categorical → Jensen–Shannon.
- PSI and Jensen–Shannon bin the data (`utils.get_binned_data`): a numeric column with more than 20 distinct
  reference values on equal-width Sturges edges over reference + current pooled
  (`np.histogram_bin_edges(concat, "sturges")`, whatever n_bins says), anything else by value counts over
  the union of both sides' values. Shares are counts / rows. PSI replaces empty bins by 1e-4 (by the
  smallest non-zero share / 1e6 when that is ≤ 1e-4), each side on its own, without renormalising;
  Jensen–Shannon (scipy, natural log) gets no fill.
- Thresholds and directions: PSI, Jensen–Shannon and Wasserstein (÷ max(std_ref, 0.001), population std)
  drift when score ≥ 0.1; KS (scipy's ks_2samp: exact p up to 10,000 rows a side) when p ≤ 0.05;
  chi-square and z when p < 0.05. A dataset drifts when the share of drifted columns is ≥ 0.5.

Samples here are kept sorted (the reference once, at registration), so a histogram is a binary search per
edge and the Wasserstein integral one merge, instead of Evidently's sorts and rescans; the arithmetic on
the counts is the same, which is what makes the numbers equal (tests/monitoring/test_stattests.py holds
them against values Evidently produced).
"""

import math
from dataclasses import dataclass, field

import numpy as np
from django.db import models
from scipy import stats
from scipy.spatial import distance


class Method(models.TextChoices):
    AUTO = "auto", "Evidently's default for the column"
    PSI = "psi", "Population stability index"
    JENSENSHANNON = "jensenshannon", "Jensen–Shannon distance"
    WASSERSTEIN = "wasserstein", "Wasserstein distance (normed)"
    KS = "ks", "Kolmogorov–Smirnov p-value"
    CHISQUARE = "chisquare", "Chi-square p-value"
    Z = "z", "Z-test p-value"


class Kind(models.TextChoices):
    NUMERIC = "numeric"
    CATEGORICAL = "categorical"


@dataclass(frozen=True)
class MethodRule:
    threshold: float
    kinds: tuple  # column kinds Evidently allows the method for when a user asks for it
    p_value: bool  # the score is a p-value: drift when it is small
    inclusive: bool  # drift at score == threshold too (≥ for distances, ≤ for KS)

    def drifted(self, score, threshold):
        if self.p_value:
            return score <= threshold if self.inclusive else score < threshold
        return score >= threshold


RULES = {
    Method.PSI: MethodRule(0.1, (Kind.NUMERIC, Kind.CATEGORICAL), p_value=False, inclusive=True),
    Method.JENSENSHANNON: MethodRule(0.1, (Kind.NUMERIC, Kind.CATEGORICAL), p_value=False, inclusive=True),
    Method.WASSERSTEIN: MethodRule(0.1, (Kind.NUMERIC,), p_value=False, inclusive=True),
    Method.KS: MethodRule(0.05, (Kind.NUMERIC,), p_value=True, inclusive=True),
    Method.CHISQUARE: MethodRule(0.05, (Kind.CATEGORICAL,), p_value=True, inclusive=False),
    Method.Z: MethodRule(0.05, (Kind.CATEGORICAL,), p_value=True, inclusive=False),
}
DATASET_DRIFT_SHARE = 0.5
_SMALL_REFERENCE = 1000  # Evidently's switch from tests (p-values) to distances
_BINNED_DISTINCT = 20  # more distinct reference values than this: Sturges bins, else value counts


class MethodNotApplicable(ValueError):
    """The method cannot test a column of this kind (Evidently refuses it too)."""


@dataclass(frozen=True)
class Sample:
    """One side of a column after Evidently's cleaning: sorted finite numbers, or category counts."""

    kind: str
    n: int
    values: np.ndarray | None = field(default=None, repr=False)  # numeric: sorted, finite, float64
    counts: dict | None = None  # categorical: {value: count}, nulls left out
    integer: bool = False  # an integer column in Evidently's frame (numpy's Sturges width is then ≥ 1)
    std: float | None = None  # numeric: population std, as np.std gives it on the column

    def distinct(self):
        """How many distinct values."""
        if self.kind == Kind.CATEGORICAL:
            return len(self.counts)
        if not self.n:
            return 0
        return int(np.count_nonzero(np.diff(self.values))) + 1

    def value_counts(self):
        """{value: count} of the sample (numeric values as floats)."""
        if self.kind == Kind.CATEGORICAL:
            return self.counts
        uniques, counts = np.unique(self.values, return_counts=True)
        return dict(zip(uniques.tolist(), counts.tolist(), strict=True))


def numeric_sample(values, *, integer=False, std=None, presorted=False, with_std=True):
    """A numeric side from raw values: NaN and ±inf dropped (as Evidently does), the rest sorted.

    The std (population, as np.std) is what normalises Wasserstein: only a reference needs it."""
    array = np.asarray(values, dtype=np.float64)
    finite = array[np.isfinite(array)]
    if std is None and with_std and finite.size:
        std = float(np.std(finite))
    if not presorted:
        finite.sort()  # in place: `finite` is already a copy
    return Sample(kind=Kind.NUMERIC, n=int(finite.size), values=finite, integer=integer, std=std)


def categorical_sample(values):
    """A categorical side from raw values: None / NaN dropped, the rest counted."""
    counts = {}
    for value in values:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        counts[value] = counts.get(value, 0) + 1
    return Sample(kind=Kind.CATEGORICAL, n=sum(counts.values()), counts=counts)


def counts_sample(counts):
    """A categorical side from counts already made (a stored reference, merged sketches)."""
    counts = {key: int(value) for key, value in counts.items() if value}
    return Sample(kind=Kind.CATEGORICAL, n=sum(counts.values()), counts=counts)


@dataclass(frozen=True)
class ColumnDrift:
    """One column's verdict: the method, its score (a p-value for the tests), threshold and whether it drifted."""

    method: str
    score: float
    threshold: float
    drifted: bool
    reference_rows: int
    current_rows: int


def _pooled_distinct(reference, current):
    """Distinct values of both sides pooled, exact up to 6 (all the default choice needs)."""
    if reference.kind == Kind.CATEGORICAL:
        return len(set(reference.counts) | set(current.counts))
    if reference.distinct() > 5 or current.distinct() > 5:
        return 6
    return len(np.union1d(reference.values, current.values))


def default_method(reference, current):
    """The test Evidently picks for a column of this kind, reference size and number of values."""
    n_values = _pooled_distinct(reference, current)
    if reference.n <= _SMALL_REFERENCE:
        if n_values <= 5 or reference.kind == Kind.CATEGORICAL:
            return Method.CHISQUARE if n_values > 2 else Method.Z
        return Method.KS
    if reference.kind == Kind.NUMERIC and n_values > 5:
        return Method.WASSERSTEIN
    return Method.JENSENSHANNON


def _fill_zeroes(percents):
    nonzero = percents[percents != 0]
    smallest = nonzero.min()
    np.place(percents, percents == 0, smallest / 10**6 if smallest <= 0.0001 else 0.0001)


def _counts_on_edges(sorted_values, edges):
    """np.histogram's counts for sorted data: [e_i, e_i+1) bins, the last one closed."""
    cumulative = np.concatenate(
        (np.searchsorted(sorted_values, edges[:-1], "left"), np.searchsorted(sorted_values, edges[-1:], "right"))
    )
    return np.diff(cumulative)


def binned_shares(reference, current, *, fill, cache=None):
    """Evidently's get_binned_data: the share of each side in each bin (or value), zeros filled for PSI.

    `cache` (a dict) keeps the unfilled shares between PSI and Jensen–Shannon of the same column."""
    key = "binned_shares"
    if cache is not None and key in cache:
        reference_percents, current_percents = cache[key]
    elif reference.kind == Kind.NUMERIC and reference.distinct() > _BINNED_DISTINCT:
        pooled = np.concatenate((reference.values, current.values))
        if reference.integer and current.integer:
            pooled = pooled.astype(np.int64)
        edges = np.histogram_bin_edges(pooled, bins="sturges")
        del pooled
        reference_percents = _counts_on_edges(reference.values, edges) / reference.n
        current_percents = _counts_on_edges(current.values, edges) / current.n
    else:
        reference_counts, current_counts = reference.value_counts(), current.value_counts()
        keys = list(set(reference_counts) | set(current_counts))
        reference_percents = np.array([reference_counts.get(key, 0) / reference.n for key in keys])
        current_percents = np.array([current_counts.get(key, 0) / current.n for key in keys])
    if cache is not None:
        cache[key] = (reference_percents, current_percents)
    if fill:
        reference_percents, current_percents = reference_percents.copy(), current_percents.copy()
        _fill_zeroes(reference_percents)
        _fill_zeroes(current_percents)
    return reference_percents, current_percents


def psi(reference_percents, current_percents):
    """PSI of two share vectors (already filled)."""
    return float(np.sum((reference_percents - current_percents) * np.log(reference_percents / current_percents)))


def jensenshannon(reference_percents, current_percents):
    """Jensen–Shannon distance, natural log (scipy's, as Evidently calls it)."""
    return float(distance.jensenshannon(reference_percents, current_percents))


_BLOCK = 1 << 18  # the Wasserstein integral is summed in blocks, so its temporaries stay a few MB


def wasserstein_normed(reference, current):
    """scipy's wasserstein_distance on two sorted samples, by one merge; ÷ max(reference std, 0.001)."""
    u, v = reference.values, current.values
    n, m = u.size, v.size
    # Where each current value lands among the reference values (after equal ones, as a stable sort of
    # reference + current puts it), then the merged order without sorting again.
    positions = np.searchsorted(u, v, "right")
    positions += np.arange(m)
    is_current = np.zeros(n + m, dtype=bool)
    is_current[positions] = True
    merged = np.empty(n + m)
    merged[positions] = v
    del positions
    merged[~is_current] = u
    # ∫|F_u - F_v| over the merged points: scipy's sum of |u_cdf - v_cdf| * deltas, block by block.
    total, seen_current = 0.0, 0
    for first in range(0, n + m - 1, _BLOCK):
        last = min(first + _BLOCK, n + m - 1)
        current_cdf = np.cumsum(is_current[first:last]) + seen_current
        seen_current = int(current_cdf[-1])
        reference_cdf = np.arange(first + 1, last + 1) - current_cdf
        total += float(np.dot(np.abs(reference_cdf / n - current_cdf / m), np.diff(merged[first : last + 1])))
    return total / max(float(reference.std), 0.001)


def ks_p_value(reference, current):
    """scipy's two-sample KS p-value (two-sided, method auto: exact up to 10,000 rows a side)."""
    return float(stats.ks_2samp(reference.values, current.values)[1])


def chisquare_p_value(reference, current):
    """Evidently's chi-square: current counts against reference counts scaled to the current size."""
    reference_counts, current_counts = reference.value_counts(), current.value_counts()
    keys = list(set(reference_counts) | set(current_counts))
    k_norm = current.n / reference.n
    expected = [reference_counts.get(key, 0) * k_norm for key in keys]
    observed = [current_counts.get(key, 0) for key in keys]
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(stats.chisquare(observed, expected)[1])


def z_p_value(reference, current):
    """Evidently's two-proportion z-test: the share of rows not equal to the smallest value."""
    reference_counts, current_counts = reference.value_counts(), current.value_counts()
    if len(reference_counts) == 1 and len(current_counts) == 1 and set(reference_counts) == set(current_counts):
        return 1.0
    first = sorted(set(reference_counts) | set(current_counts))[0]
    n1, n2 = reference.n, current.n
    p1 = float(n1 - reference_counts.get(first, 0)) / n1
    p2 = float(n2 - current_counts.get(first, 0)) / n2
    pooled = float(p1 * n1 + p2 * n2) / (n1 + n2)
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2))
    return float(2 * (1 - stats.norm.cdf(np.abs(z))))


def column_drift(reference, current, *, method=Method.AUTO, threshold=None, cache=None):
    """Drift of one column as Evidently reports it; MethodNotApplicable for a method the kind refuses.

    Several methods on one column may share a `cache` dict (the binning)."""
    if method == Method.AUTO:
        method = default_method(reference, current)
    else:
        method = Method(method)
        if reference.kind not in RULES[method].kinds:
            raise MethodNotApplicable(f"{method.value} does not apply to a {reference.kind} column")
    rule = RULES[method]
    threshold = rule.threshold if threshold is None else threshold
    if method == Method.PSI:
        score = psi(*binned_shares(reference, current, fill=True, cache=cache))
    elif method == Method.JENSENSHANNON:
        score = jensenshannon(*binned_shares(reference, current, fill=False, cache=cache))
    elif method == Method.WASSERSTEIN:
        score = wasserstein_normed(reference, current)
    elif method == Method.KS:
        score = ks_p_value(reference, current)
    elif method == Method.CHISQUARE:
        score = chisquare_p_value(reference, current)
    else:
        score = z_p_value(reference, current)
    return ColumnDrift(
        method=method.value,
        score=score,
        threshold=threshold,
        drifted=bool(rule.drifted(score, threshold)),
        reference_rows=reference.n,
        current_rows=current.n,
    )


def dataset_drift(drifted_flags, *, share=DATASET_DRIFT_SHARE):
    """(dataset drifted, share of drifted columns) by Evidently's rule: share of drifted columns ≥ 0.5."""
    flags = list(drifted_flags)
    if not flags:
        return False, 0.0
    drifted_share = sum(1 for flag in flags if flag) / len(flags)
    return bool(drifted_share >= share), drifted_share
