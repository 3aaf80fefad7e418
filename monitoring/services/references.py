"""A version's drift reference: what drift and accuracy estimation need from its training data, made once.

Numeric features keep every finite training value, sorted (so the reference's counts on any bins are a
binary search, never a rescan), categorical ones their counts; the predicted class is compared with the
training labels and the confidence with the held-out split's. The held-out split (the run's test_size and
random_state, stratified as the trainer does) also calibrates the confidence for CBPE.

Built when `registry.signals.version_registered` fires (a task on the `monitoring` queue once the
registration commits), or by `manage.py monitor references` for versions registered before.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from django.db import transaction

from core.errors import NotFound
from core.storage import artifact_read_verified
from experiments.services import dataset_frame_load
from monitoring.models import DriftReference, ReferenceColumn
from monitoring.stattests import Kind, categorical_sample, numeric_sample
from registry.models import ModelVersion

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from numpy.typing import ArrayLike

logger = logging.getLogger(__name__)

# The sketch's fine bins: the reference's percentiles (0, 1, ..., 100), deduplicated.
_SKETCH_PERCENTILES = np.linspace(0, 100, 101)
_DEFAULT_SPLIT = {"test_size": 0.2, "random_state": 42}


@dataclass(frozen=True)
class SketchBins:
    """Fixed bins of one numeric reference column, and the reference's counts on them."""

    edges: list  # inner edges; bin i holds values v with edges[i-1] <= v < edges[i] (below / above the ends)
    groups: list  # the reference decile each bin belongs to (PSI and JS on sketches use these ten groups)
    reference_counts: list


def sketch_bins(sorted_values: np.ndarray) -> SketchBins:
    """The sketch bins of a sorted, finite reference sample."""
    if not len(sorted_values):
        return SketchBins(edges=[], groups=[0], reference_counts=[0])
    edges = np.unique(np.percentile(sorted_values, _SKETCH_PERCENTILES))
    counts = np.diff(np.concatenate(([0], np.searchsorted(sorted_values, edges, "left"), [len(sorted_values)])))
    before = np.concatenate(([0], np.cumsum(counts)[:-1])) / len(sorted_values)
    groups = np.minimum((before * 10 + 1e-9).astype(int), 9)
    return SketchBins(edges=edges.tolist(), groups=groups.tolist(), reference_counts=counts.tolist())


def _numeric_column(*, name, role, series, integer):
    raw = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
    sample = numeric_sample(raw[np.isfinite(raw)], integer=integer)
    bins = sketch_bins(sample.values)
    return ReferenceColumn(
        name=name,
        role=role,
        kind=Kind.NUMERIC,
        n=sample.n,
        nulls=int(len(raw) - sample.n),
        integer=integer,
        std=sample.std,
        minimum=float(sample.values[0]) if sample.n else None,
        maximum=float(sample.values[-1]) if sample.n else None,
        sorted_values=sample.values.astype("<f8").tobytes(),
        sketch_edges=bins.edges,
        sketch_groups=bins.groups,
        reference_bin_counts=bins.reference_counts,
    )


def _categorical_column(*, name, role, values):
    sample = categorical_sample(values)
    return ReferenceColumn(
        name=name,
        role=role,
        kind=Kind.CATEGORICAL,
        n=sample.n,
        nulls=len(values) - sample.n,
        counts={str(key): count for key, count in sample.counts.items()},
    )


def _held_out(version, frame):
    """The run's held-out split, made again as the trainer made it (same test_size, seed and stratification)."""
    from sklearn.model_selection import train_test_split

    params = dict(version.run.params.values_list("key", "value"))
    test_size = float(params.get("test_size", _DEFAULT_SPLIT["test_size"]))
    random_state = int(float(params.get("random_state", _DEFAULT_SPLIT["random_state"])))
    target = version.signature["target"]
    labels = frame[target].astype(str)
    features = frame.drop(columns=[target])
    _, X_test, _, y_test = train_test_split(
        features,
        labels,
        test_size=test_size,
        random_state=random_state,
        stratify=labels if labels.value_counts().min() >= 2 else None,
    )
    return X_test, y_test


def calibration_fit(
    *, confidence: np.ndarray, predicted: np.ndarray, correct: np.ndarray
) -> dict[str, dict[str, list[float]]]:
    """Per predicted class, the isotonic map confidence → P(correct) (CBPE's calibration), as its knots."""
    from sklearn.isotonic import IsotonicRegression

    calibration = {}
    for label in sorted(set(predicted)):
        mask = predicted == label
        if mask.sum() < 2:
            continue
        model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
            confidence[mask], correct[mask].astype(float)
        )
        calibration[str(label)] = {"x": model.X_thresholds_.tolist(), "y": model.y_thresholds_.tolist()}
    return calibration


def calibrated_confidence(
    calibration: Mapping[str, Mapping[str, Sequence[float]]], *, predicted: ArrayLike, confidence: ArrayLike
) -> np.ndarray:
    """The calibrated confidence of each row's predicted class; the raw confidence where no map exists."""
    calibrated = np.array(confidence, dtype=np.float64, copy=True)
    predicted = np.asarray(predicted)
    for label, knots in calibration.items():
        mask = predicted == label
        if mask.any():
            calibrated[mask] = np.interp(calibrated[mask], knots["x"], knots["y"])
    return calibrated


def _validation(version, frame):
    """Held-out predictions: confidence column, calibration and accuracy (empty if the model cannot be loaded)."""
    import joblib

    X_test, y_test = _held_out(version, frame)
    pipeline = joblib.load(io.BytesIO(artifact_read_verified(version.artifact_path, version.artifact_sha256)))
    probabilities = pipeline.predict_proba(X_test)
    classes = np.array([str(label) for label in pipeline.classes_])
    predicted = classes[probabilities.argmax(axis=1)]
    confidence = probabilities.max(axis=1)
    correct = predicted == y_test.to_numpy()
    return {
        "confidence": confidence,
        "accuracy": float(correct.mean()) if len(correct) else None,
        "rows": int(len(correct)),
        "calibration": calibration_fit(confidence=confidence, predicted=predicted, correct=correct),
    }


def drift_reference_build(*, version: ModelVersion, frame: pd.DataFrame | None = None) -> DriftReference:
    """Build (or rebuild) the drift reference of `version` from its training data; returns it.

    `frame` replaces the training data (a benchmark's million rows); by default the version's dataset is
    loaded and checked against its checksum. Read-only towards the registry: it only reads the version.
    """
    started = time.perf_counter()
    version = ModelVersion.objects.select_related("model", "dataset", "run").get(pk=version.pk)
    features = version.signature["features"]
    target = version.signature["target"]
    if frame is None:
        frame = dataset_frame_load(version=version.dataset)
    columns = []
    for feature in features:
        name = feature["name"]
        if feature["dtype"] == "categorical":
            values = [None if value is None or value != value else str(value) for value in frame[name].tolist()]
            columns.append(_categorical_column(name=name, role=ReferenceColumn.Role.FEATURE, values=values))
        else:
            integer = pd.api.types.is_integer_dtype(frame[name].dtype)
            columns.append(
                _numeric_column(name=name, role=ReferenceColumn.Role.FEATURE, series=frame[name], integer=integer)
            )
    if target in frame:
        labels = frame[target].astype(str).tolist()
        columns.append(_categorical_column(name="prediction", role=ReferenceColumn.Role.PREDICTION, values=labels))
    validation = {"confidence": None, "accuracy": None, "rows": 0, "calibration": {}}
    if target in frame:
        try:
            validation = _validation(version, frame)
        except Exception as exc:  # the model file or the split could not be had: drift still works without it
            logger.warning("no held-out predictions for %s (%s): accuracy estimation is off", version, exc)
    if validation["confidence"] is not None:
        columns.append(
            _numeric_column(
                name="confidence",
                role=ReferenceColumn.Role.CONFIDENCE,
                series=pd.Series(validation["confidence"]),
                integer=False,
            )
        )
    with transaction.atomic():
        reference, _ = DriftReference.objects.update_or_create(
            version=version,
            defaults={
                "dataset": str(version.dataset),
                "n_rows": int(len(frame)),
                "vector_layout": [f["name"] for f in features if f["dtype"] != "categorical"],
                "validation_accuracy": validation["accuracy"],
                "validation_rows": validation["rows"],
                "calibration": validation["calibration"],
                "build_seconds": 0.0,
            },
        )
        reference.columns.all().delete()
        for column in columns:
            column.reference = reference
        ReferenceColumn.objects.bulk_create(columns)
        reference.build_seconds = time.perf_counter() - started
        reference.save(update_fields=["build_seconds"])
    return reference


def drift_references_backfill(*, model_name: str | None = None, rebuild: bool = False) -> list[DriftReference]:
    """Build the references missing (or all, with `rebuild`) for every version (or one model's); returns them."""
    versions = ModelVersion.objects.select_related("model").order_by("model__name", "version")
    if model_name:
        if not versions.filter(model__name=model_name).exists():
            raise NotFound(f"no registered model {model_name!r} with versions", field="model")
        versions = versions.filter(model__name=model_name)
    if not rebuild:
        versions = versions.filter(drift_reference__isnull=True)
    return [drift_reference_build(version=version) for version in versions]
