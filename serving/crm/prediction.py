"""The one place the CRM calls the serving path and reads its answer.

serving.predict.predict is the entry point of every prediction (version choice with canary, the
prediction log, the metrics); it answers with a frozen `Prediction`.
"""

from dataclasses import dataclass

import numpy as np

from core.errors import Conflict, NotFound
from serving import runtime as serving_runtime
from serving.predict import Prediction, RequestKind, predict


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


def _read(result: Prediction, model_name) -> Served:
    return Served(
        model_name=model_name,
        version=result.model.version,
        served_by=str(result.served_by),
        classes=list(result.model.classes),
        labels=list(result.labels),
        probabilities=np.asarray(result.probabilities),
        request_id=result.request_id,
    )


def columns_predict(*, model_name: str, columns: dict, rows: int, request_id: str) -> Served:
    """Predict `rows` rows of checked columns with the model's production deployment (canary included)."""
    result = predict(model_name=model_name, payload=columns, kind=RequestKind.COLUMNS, request_id=request_id)
    if result.rows != rows:
        raise AssertionError(f"{rows} customers were sent, {result.rows} predicted")
    return _read(result, model_name)
