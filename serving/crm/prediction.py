"""The one place the CRM calls the serving path and reads its answer.

serving.predict.predict is the entry point of every prediction (version choice with canary, the
prediction log, the metrics). It returns a 7-tuple today and a frozen `Prediction` dataclass soon;
only `_read` below knows which.
"""

from dataclasses import dataclass

import numpy as np

from core.errors import Conflict, NotFound
from serving import runtime as serving_runtime
from serving.predict import predict

# predict() takes columns already checked and built ({feature: [values]}, rows) as they are.
_COLUMNS_KIND = "columns"


@dataclass(frozen=True)
class Served:
    """What the CRM needs of a prediction: who answered, the labels and probabilities per row."""

    model_name: str
    version: int
    served_by: str  # primary or canary
    classes: list
    labels: list
    probabilities: np.ndarray
    request_id: str


@dataclass(frozen=True)
class ServingFeatures:
    """The features the model's production deployments take (primary and canary alike) and the primary's version."""

    model_name: str
    primary_version: int
    features: tuple[tuple[str, bool], ...]  # (name, is categorical)


def serving_features_get(*, model_name: str) -> ServingFeatures:
    """What the model in Production needs, from the routes this process already serves with (no query
    once they are loaded); Conflict (409) when nothing of it is in Production."""
    try:
        route = serving_runtime.runtime.route(model_name, "production")
    except NotFound:
        raise Conflict(
            f"model {model_name!r} has no version in Production: promote one before predicting segments",
            field="model",
        ) from None
    features = {}
    # A canary may take other features than the primary: the columns built carry all of them. (A shadow
    # predicts on the same columns; a feature only it needs is not asked of the CRM.)
    for model in (route.primary, route.canary):
        for name, categorical in model.features if model is not None else ():
            features.setdefault(name, categorical)
    return ServingFeatures(
        model_name=model_name, primary_version=route.primary.version, features=tuple(features.items())
    )


def _read(result, model_name) -> Served:
    if isinstance(result, tuple):  # (model, labels, probabilities, mode, request_id, latency_ms, rows)
        model, labels, probabilities, served_by, request_id, _latency_ms, _rows = result
    else:  # Prediction(model, labels, probabilities, served_by, request_id, latency_ms, rows)
        model, labels, probabilities = result.model, result.labels, result.probabilities
        served_by, request_id = result.served_by, result.request_id
    return Served(
        model_name=model_name,
        version=model.version,
        served_by=str(served_by),
        classes=list(model.classes),
        labels=list(labels),
        probabilities=np.asarray(probabilities),
        request_id=request_id,
    )


def columns_predict(*, model_name: str, columns: dict, rows: int, request_id: str) -> Served:
    """Predict `rows` rows of checked columns with the model's production deployment (canary included)."""
    result = predict(model_name=model_name, payload=(columns, rows), kind=_COLUMNS_KIND, request_id=request_id)
    return _read(result, model_name)
