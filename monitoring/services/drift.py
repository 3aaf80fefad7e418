"""Drift of a version's traffic against its training data, and of any dataset against another.

Two computations, stored alike (DriftRun + one DriftResult per column and method):
- exact: the raw window read from the prediction log, every column tested as Evidently 0.7 tests it
  (its default test decides the column; PSI and Jensen–Shannon are stored beside it as effect sizes);
  the numbers equal Evidently's on the same data.
- sketch: the sum of the window's hourly sketches on the reference's fixed bins: PSI and Jensen–Shannon
  on the reference's deciles, and bounds on the KS distance, for long windows and frequent checks; for
  categorical columns the counts are the raw ones, so the numbers are Evidently's there too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Count

from core.errors import InvalidInput, NotFound
from experiments.services import dataset_frame_load, dataset_resolve
from monitoring import logdata
from monitoring.models import DriftReference, DriftResult, DriftRun, FeatureSketch, ReferenceColumn
from monitoring.stattests import (
    RULES,
    Kind,
    Method,
    MethodNotApplicable,
    Sample,
    categorical_sample,
    column_drift,
    counts_sample,
    dataset_drift,
    jensenshannon,
    numeric_sample,
    psi,
)
from monitoring.windows import hour_floor
from registry.models import ModelVersion, RegisteredModel
from serving.models import Deployment, PredictionLog

if TYPE_CHECKING:
    from collections.abc import Iterable

    from numpy.typing import ArrayLike

    from monitoring.windows import Window

Role = ReferenceColumn.Role
# Stored beside the deciding test as effect sizes: alert on these, not on a p-value (at a million rows
# a KS p-value flags a difference of 0.002 in the CDF).
_EFFECT_SIZES = (Method.PSI, Method.JENSENSHANNON)
_SKETCH_PSI_THRESHOLD = RULES[Method.PSI].threshold


def _method_parse(method):
    try:
        return Method(method or Method.AUTO)
    except ValueError:
        raise InvalidInput(
            f"unknown method {method!r}; use one of {', '.join(m.value for m in Method)}", field="method"
        ) from None


@dataclass
class ColumnOutcome:
    """One column's results before they are stored."""

    name: str
    role: str
    results: list = field(default_factory=list)  # DriftResult rows (unsaved)

    @property
    def verdict(self):
        return next((r for r in self.results if r.verdict), None)


def _reference_sample(column):
    if column.kind == Kind.CATEGORICAL:
        return counts_sample(column.counts or {})
    # Read one column's values at a time (the list of columns leaves them out): a million-row reference
    # is 8 MB a column.
    values = logdata.reference_values(column.pk)
    return Sample(kind=Kind.NUMERIC, n=int(values.size), values=values, integer=column.integer, std=column.std)


def _test_column(*, name, role, reference, current, method, effect_sizes):
    """The column's results: the deciding test (verdict) and, with `effect_sizes`, PSI and JS beside it."""
    outcome = ColumnOutcome(name=name, role=role)
    sizes = {"reference_rows": reference.n, "current_rows": current.n}
    if not reference.n or not current.n:
        side = "the reference" if not reference.n else "the window"
        outcome.results.append(
            DriftResult(
                name=name,
                role=role,
                method=method.value,
                verdict=True,
                note=f"not enough data: no values in {side} (all null, NaN or ±inf)",
                **sizes,
            )
        )
        return outcome
    methods = [method]
    if effect_sizes:
        methods += [m for m in _EFFECT_SIZES if m != method]
    cache = {}
    for index, chosen in enumerate(methods):
        try:
            drift = column_drift(reference, current, method=chosen, cache=cache)
        except MethodNotApplicable as exc:
            outcome.results.append(
                DriftResult(name=name, role=role, method=chosen.value, verdict=index == 0, note=str(exc), **sizes)
            )
            continue
        if index == 0 and chosen == Method.AUTO:
            # The default test decides; an effect size equal to it is not stored twice.
            methods[1:] = [m for m in methods[1:] if m.value != drift.method]
        outcome.results.append(
            DriftResult(
                name=name,
                role=role,
                method=drift.method,
                score=None if drift.score != drift.score else drift.score,
                threshold=drift.threshold,
                drifted=drift.drifted,
                verdict=index == 0,
                note="" if drift.score == drift.score else "the test is undefined here (NaN), as in Evidently",
                **sizes,
            )
        )
    return outcome


def _store(*, run, outcomes):
    feature_verdicts = [
        o.verdict
        for o in outcomes
        if o.role == Role.FEATURE and o.verdict is not None and o.verdict.drifted is not None
    ]
    drifted, share = dataset_drift([v.drifted for v in feature_verdicts])
    run.status = DriftRun.Status.OK
    run.dataset_drift = drifted if feature_verdicts else None
    run.share_drifted = share if feature_verdicts else None
    run.n_drifted = sum(1 for v in feature_verdicts if v.drifted)
    run.n_columns = len(feature_verdicts)
    with transaction.atomic():  # a run is stored whole or not at all
        run.save()
        for outcome in outcomes:
            for result in outcome.results:
                result.run = run
        DriftResult.objects.bulk_create([r for o in outcomes for r in o.results])
    return run


def _versions_served(*, model_name, start, end):
    """Versions that answered in the window, most rows first."""
    return list(
        PredictionLog.objects.filter(model_name=model_name, created_at__gte=start, created_at__lt=end, version__gt=0)
        .values_list("version", flat=True)
        .annotate(n=Count("id"))
        .order_by("-n")
    )


def drift_version_default(*, model_name: str, window: Window) -> int:
    """The version a drift question is about when none is named: production's primary, else the busiest."""
    if not RegisteredModel.objects.filter(name=model_name).exists():
        raise NotFound(f"no registered model {model_name!r}", field="name")
    primary = (
        Deployment.objects.filter(
            model__name=model_name,
            environment=Deployment.Environment.PRODUCTION,
            mode=Deployment.Mode.PRIMARY,
            status=Deployment.Status.ACTIVE,
        )
        .values_list("version__version", flat=True)
        .first()
    )
    if primary is not None:
        return primary
    served = _versions_served(model_name=model_name, start=window.start, end=window.end)
    if served:
        return served[0]
    latest = ModelVersion.objects.filter(model__name=model_name).order_by("-version").first()
    if latest is None:
        raise NotFound(f"{model_name} has no versions", field="name")
    return latest.version


def _version_reference(model_name, version):
    found = ModelVersion.objects.filter(model__name=model_name, version=version).first()
    if found is None:
        raise NotFound(f"{model_name} has no version {version}", field="version")
    return DriftReference.objects.filter(version=found).first()


def _no_reference_message(model_name, version):
    return (
        f"{model_name} v{version} has no drift reference (registered before monitoring existed, or its build "
        f"failed): build it with `manage.py monitor references --model {model_name}`"
    )


def drift_compute(
    *,
    model_name: str,
    window: Window,
    version: int | None = None,
    method: Method | str = Method.AUTO,
    kind: DriftRun.Computation | str = DriftRun.Computation.EXACT,
    trigger: DriftRun.Trigger | str = "schedule",
) -> DriftRun:
    """Compute and store the drift of `model_name` (version: production's by default) over `window`."""
    method = _method_parse(method)
    if version is None:
        version = drift_version_default(model_name=model_name, window=window)
    run = DriftRun(
        model_name=model_name,
        version=version,
        window=window.label,
        window_start=window.start,
        window_end=window.end,
        kind=kind,
        method=method.value,
        trigger=trigger,
    )
    started = time.perf_counter()
    reference = _version_reference(model_name, version)
    if reference is None:
        run.status = DriftRun.Status.NO_REFERENCE
        run.message = _no_reference_message(model_name, version)
        run.save()
        return run
    columns = list(reference.columns.defer("sorted_values"))
    run.reference_rows = reference.n_rows
    if kind == DriftRun.Computation.SKETCH:
        outcomes = _sketch_outcomes(run=run, reference=reference, columns=columns, method=method)
    else:
        outcomes = _exact_outcomes(run=run, reference=reference, columns=columns, method=method)
    run.seconds = time.perf_counter() - started
    if outcomes is None:
        run.save()
        return run
    return _store(run=run, outcomes=outcomes)


def _not_enough(run, rows):
    run.rows = rows
    run.status = DriftRun.Status.NOT_ENOUGH_DATA
    run.message = (
        f"not enough data: {rows} row{'s' if rows != 1 else ''} in the window, "
        f"at least {settings.MONITORING_DRIFT_MIN_ROWS} are needed for a verdict"
    )


def _exact_outcomes(*, run, reference, columns, method):
    scope = {"model_name": run.model_name, "version": run.version, "start": run.window_start, "end": run.window_end}
    layout = list(reference.vector_layout)
    # The predicted classes are counted by the database while the vectors are read.
    classes = ModelVersion.objects.filter(model__name=run.model_name, version=run.version).values_list(
        "signature", flat=True
    )[0]["classes"]
    window = logdata.window_columns(**scope, width=len(layout))
    rows = window.rows
    if rows < settings.MONITORING_DRIFT_MIN_ROWS:
        _not_enough(run, rows)
        return None
    run.rows = rows
    features = [c for c in columns if c.role == Role.FEATURE]
    categorical = logdata.categorical_columns(**scope, names=[c.name for c in features if c.kind == Kind.CATEGORICAL])

    def current_of(column):
        if column.role == Role.PREDICTION:
            return counts_sample(window.class_counts([str(c) for c in classes], scope=scope))
        if column.role == Role.CONFIDENCE:
            return numeric_sample(window.confidence(), with_std=False)
        if column.kind == Kind.NUMERIC:
            return numeric_sample(window.column(layout.index(column.name)), with_std=False)
        return categorical_sample(categorical[column.name])

    # One column at a time: its reference (8 MB for a million rows) and current values are dropped before
    # the next is read.
    ordered = features + [c for c in columns if c.role != Role.FEATURE]
    outcomes = []
    for column in ordered:
        feature = column.role == Role.FEATURE
        outcomes.append(
            _test_column(
                name=column.name,
                role=column.role,
                reference=_reference_sample(column),
                current=current_of(column),
                method=method if feature else Method.AUTO,
                effect_sizes=feature,
            )
        )
    return outcomes


# --- The sketch path ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MergedSketch:
    """A column's sketches of a window, summed."""

    n: int
    nulls: int
    infinite: int
    bin_counts: np.ndarray | None
    counts: dict | None
    minimum: float | None
    maximum: float | None


@dataclass(frozen=True)
class _SketchRow:
    n: int
    nulls: int
    infinite: int
    bin_counts: list
    counts: dict | None
    minimum: float | None
    maximum: float | None


def sketches_merge(sketches: Iterable[FeatureSketch | _SketchRow], *, bins: int | None = None) -> MergedSketch:
    """Sum hourly sketches of one column: counts add, min and max take the extremes. With `bins` (how many
    the reference has now), sketches made on other bins (before a rebuilt reference) are left out."""
    sketches = [s for s in sketches if bins is None or not s.bin_counts or len(s.bin_counts) == bins]
    n = sum(s.n for s in sketches)
    lists = [sketch.bin_counts for sketch in sketches if sketch.bin_counts]
    summed = np.asarray(lists, dtype=np.int64).sum(axis=0) if lists else None
    counts = None
    for sketch in sketches:
        if sketch.counts is not None:
            counts = {} if counts is None else counts
            for key, value in sketch.counts.items():
                counts[key] = counts.get(key, 0) + value
    minimums = [s.minimum for s in sketches if s.minimum is not None]
    maximums = [s.maximum for s in sketches if s.maximum is not None]
    return MergedSketch(
        n=n,
        nulls=sum(s.nulls for s in sketches),
        infinite=sum(s.infinite for s in sketches),
        bin_counts=summed,
        counts=counts,
        minimum=min(minimums) if minimums else None,
        maximum=max(maximums) if maximums else None,
    )


def binned_drift(*, reference_counts: ArrayLike, current_counts: ArrayLike, groups: ArrayLike) -> dict[str, float]:
    """PSI and JS on the reference's deciles and bounds on the KS distance, from counts on the fixed bins."""
    reference_counts = np.asarray(reference_counts, dtype=np.float64)
    current_counts = np.asarray(current_counts, dtype=np.float64)
    groups = np.asarray(groups)
    n_groups = int(groups.max()) + 1
    reference_groups = np.bincount(groups, weights=reference_counts, minlength=n_groups)
    current_groups = np.bincount(groups, weights=current_counts, minlength=n_groups)
    reference_percents = reference_groups / reference_counts.sum()
    current_percents = current_groups / current_counts.sum()
    js = jensenshannon(reference_percents, current_percents)
    filled_reference, filled_current = reference_percents.copy(), current_percents.copy()
    for percents in (filled_reference, filled_current):
        nonzero = percents[percents != 0]
        smallest = nonzero.min()
        percents[percents == 0] = smallest / 10**6 if smallest <= 0.0001 else 0.0001
    # KS: the CDFs are known exactly at the edges; between two edges each can only rise by its bin's share.
    reference_cdf = np.concatenate(([0.0], np.cumsum(reference_counts))) / reference_counts.sum()
    current_cdf = np.concatenate(([0.0], np.cumsum(current_counts))) / current_counts.sum()
    at_edges = np.abs(reference_cdf - current_cdf)
    within = np.maximum(reference_cdf[1:] - current_cdf[:-1], current_cdf[1:] - reference_cdf[:-1])
    return {
        "psi": psi(filled_reference, filled_current),
        "jensenshannon": js,
        "ks_lower": float(at_edges.max()),
        "ks_upper": float(min(1.0, max(at_edges.max(), within.max()))),
    }


def _sketch_outcomes(*, run, reference, columns, method):
    # Sketches are whole hours: the window becomes the complete hours inside it.
    start, end = hour_floor(run.window_start), hour_floor(run.window_end)
    run.window_start, run.window_end = start, max(end, start)
    # Plain rows, not model instances: a month is 720 sketches a column.
    fields = ("role", "name", "n", "nulls", "infinite", "bin_counts", "counts", "minimum", "maximum")
    sketches = FeatureSketch.objects.filter(
        model_name=run.model_name, version=run.version, hour__gte=start, hour__lt=end
    ).values_list(*fields)
    by_column = {}
    for values in sketches:
        sketch = _SketchRow(*values[2:])
        by_column.setdefault((values[0], values[1]), []).append(sketch)
    prediction = sketches_merge(by_column.get((Role.PREDICTION, "prediction"), []))
    rows = prediction.n
    if rows < settings.MONITORING_DRIFT_MIN_ROWS:
        _not_enough(run, rows)
        return None
    run.rows = rows
    outcomes = []
    for column in columns:
        expected = len(column.reference_bin_counts) if column.kind == Kind.NUMERIC else None
        merged = sketches_merge(by_column.get((column.role, column.name), []), bins=expected)
        sizes = {"reference_rows": column.n, "current_rows": merged.n}
        if column.kind == Kind.CATEGORICAL:
            # Category counts are exact: Evidently's own test on them.
            outcome = _test_column(
                name=column.name,
                role=column.role,
                reference=counts_sample(column.counts or {}),
                current=counts_sample(merged.counts or {}),
                method=method if column.role == Role.FEATURE else Method.AUTO,
                effect_sizes=column.role == Role.FEATURE,
            )
            outcomes.append(outcome)
            continue
        outcome = ColumnOutcome(name=column.name, role=column.role)
        if not merged.n or merged.bin_counts is None or not column.n:
            outcome.results.append(
                DriftResult(
                    name=column.name,
                    role=column.role,
                    method=Method.PSI,
                    verdict=True,
                    note="not enough data: no values in the window (all null, NaN or ±inf)",
                    **sizes,
                )
            )
            outcomes.append(outcome)
            continue
        scores = binned_drift(
            reference_counts=column.reference_bin_counts, current_counts=merged.bin_counts, groups=column.sketch_groups
        )
        detail = {
            "bins": "reference deciles",
            "ks_distance_lower": scores["ks_lower"],
            "ks_distance_upper": scores["ks_upper"],
            "window_min": merged.minimum,
            "window_max": merged.maximum,
            "nulls": merged.nulls,
            "infinite": merged.infinite,
        }
        for chosen, score in ((Method.PSI, scores["psi"]), (Method.JENSENSHANNON, scores["jensenshannon"])):
            threshold = RULES[chosen].threshold
            outcome.results.append(
                DriftResult(
                    name=column.name,
                    role=column.role,
                    method=chosen,
                    score=score,
                    threshold=threshold,
                    drifted=score >= threshold,
                    verdict=chosen == Method.PSI,
                    detail=detail,
                    **sizes,
                )
            )
        outcomes.append(outcome)
    return outcomes


# --- Any dataset against another -------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetsDrift:
    """Drift between two datasets, every column but the target, as `manage.py drift --json` prints it."""

    reference: str
    current: str
    dataset_drift: bool
    share_drifted: float
    features: list  # of dicts: feature, method, score, threshold, drifted, reference_rows, current_rows

    def as_dict(self):
        return {"dataset_drift": self.dataset_drift, "share_drifted": self.share_drifted, "features": self.features}


def _dataset_ref(ref, *, field):
    ref = (ref or "").strip()
    if not ref:
        raise InvalidInput("is required: a dataset name, NAME@sha256-prefix, or a sha256 prefix", field=field)
    name, _, sha = ref.partition("@")
    if sha:
        from experiments.models import DatasetVersion

        matches = list(DatasetVersion.objects.filter(name=name, sha256__startswith=sha.lower())[:2])
        if len(matches) != 1:
            raise InvalidInput(
                f"{ref!r} matches {'no' if not matches else 'several'} dataset versions", field=field
            ) from None
        return matches[0]
    try:
        return dataset_resolve(ref=name)
    except InvalidInput as exc:
        raise InvalidInput(exc.message, field=field) from None


def datasets_drift(*, reference: str, current: str, method: Method | str = Method.AUTO) -> DatasetsDrift:
    """Drift of dataset `current` against `reference` (names or NAME@sha), every column but the target."""
    method = _method_parse(method)
    reference_version = _dataset_ref(reference, field="reference")
    current_version = _dataset_ref(current, field="current")
    reference_frame = dataset_frame_load(version=reference_version)
    current_frame = dataset_frame_load(version=current_version)
    kinds = {c["name"]: c["dtype"] for c in reference_version.schema["columns"]}
    target = reference_version.target
    features, verdicts = [], []
    for name in reference_frame.columns:
        if name in (target, current_version.target):
            continue
        if name not in current_frame.columns:
            raise InvalidInput(
                f"column {name!r} of {reference_version} is missing from {current_version}", field="current"
            )
        if kinds.get(name) == "categorical":
            reference_sample = categorical_sample(_as_text(reference_frame[name]))
            current_sample = categorical_sample(_as_text(current_frame[name]))
        else:
            reference_series, current_series = reference_frame[name], current_frame[name]
            if reference_series.dtype == object or current_series.dtype == object:
                raise InvalidInput(f"column {name!r} is numeric in one dataset and text in the other", field="current")
            integer = reference_series.dtype.kind in "iu" and current_series.dtype.kind in "iu"
            reference_sample = numeric_sample(reference_series.to_numpy(dtype=np.float64), integer=integer)
            current_sample = numeric_sample(current_series.to_numpy(dtype=np.float64), integer=integer)
        outcome = _test_column(
            name=name,
            role=Role.FEATURE,
            reference=reference_sample,
            current=current_sample,
            method=method,
            effect_sizes=False,
        )
        result = outcome.verdict
        if result.drifted is not None:
            verdicts.append(result.drifted)
        features.append(
            {
                "feature": name,
                "method": result.method,
                "score": result.score,
                "threshold": result.threshold,
                "drifted": result.drifted,
                "reference_rows": result.reference_rows,
                "current_rows": result.current_rows,
                **({"note": result.note} if result.note else {}),
            }
        )
    drifted, share = dataset_drift(verdicts)
    return DatasetsDrift(
        reference=str(reference_version),
        current=str(current_version),
        dataset_drift=drifted,
        share_drifted=share,
        features=features,
    )


def _as_text(series):
    return [None if value is None or value != value else str(value) for value in series.tolist()]
