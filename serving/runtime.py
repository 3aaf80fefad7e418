"""What a serving process keeps in memory: loaded versions and the routes of each model.

Versions are loaded once per process (file sha256 checked first) and kept; routes (which version
is primary, canary, shadow) are kept until the change signal moves. No request queries the
database for the version once its route is loaded.
"""

import io
import logging
import threading
from dataclasses import dataclass, field

import numpy as np

from core.errors import ApplicationError, NotFound
from core.permissions import permission_require
from core.storage import artifact_read_verified
from registry.fast_inference import MISSING_CATEGORY, onnx_session
from registry.models import ModelVersion, RegisteredModel
from registry.selectors import version_get
from serving.models import Deployment
from serving.selectors import active_deployments, last_served_version
from serving.services import last_served_record
from serving.signal import signal_read

logger = logging.getLogger(__name__)
# Versions anyone may call by number; any other stage needs the predict_any_version permission.
_OPEN_STAGES = (ModelVersion.Stage.STAGING, ModelVersion.Stage.PRODUCTION)


class ModelNotServable(ApplicationError):
    """The version's file is missing or changed since registration: it is refused, never unpickled."""

    status_code = 409


@dataclass
class LoadedModel:
    pk: int
    model_name: str
    version: int
    form: str
    features: list  # [(name, is_categorical)]
    classes: list
    stage: str = ""  # when loaded; the routes and loaded versions are dropped whenever a stage changes
    _predict: object = field(repr=False, default=None)

    def predict(self, columns):
        """Class labels and probabilities for rows given as {feature: [values]} (missing: None) or as the
        checked arrays of serving.inputs.Batch."""
        return self._predict(columns)


def version_load(version) -> LoadedModel:
    """Load a version for predicting (its files checked against their sha256), whatever its stage."""
    features = [(f["name"], f["dtype"] == "categorical") for f in version.signature["features"]]
    classes = list(version.signature["classes"])
    if version.serving_form == ModelVersion.ServingForm.ONNX and version.onnx_path:
        session = onnx_session(artifact_read_verified(version.onnx_path, version.onnx_sha256))
        # The original is checked too: a version whose registered file changed is not served in any form.
        artifact_read_verified(version.artifact_path, version.artifact_sha256)

        def predict(columns):
            feeds = {}
            for name, categorical in features:
                values = columns[name]
                if categorical:
                    if isinstance(values, np.ndarray):
                        array = values.copy()
                        array[array == None] = MISSING_CATEGORY  # noqa: E711  (elementwise, not identity)
                    else:
                        array = np.array([MISSING_CATEGORY if v is None else v for v in values], dtype=object)
                elif isinstance(values, np.ndarray):
                    array = values.astype(np.float32)  # checked columns: NaN already stands for missing
                else:
                    array = np.array([np.nan if v is None else v for v in values], dtype=np.float32)
                feeds[name] = array.reshape(-1, 1)
            labels, probabilities = session.run(None, feeds)
            return labels.astype(str).tolist(), probabilities

    else:
        import joblib
        import pandas as pd

        pipeline = joblib.load(io.BytesIO(artifact_read_verified(version.artifact_path, version.artifact_sha256)))
        if hasattr(pipeline, "set_params"):
            for key in pipeline.get_params():
                if key.endswith("n_jobs"):
                    pipeline.set_params(**{key: 1})  # more jobs make one row slower, not faster

        def predict(columns):
            frame = pd.DataFrame({name: columns[name] for name, _ in features})
            probabilities = pipeline.predict_proba(frame)
            return [classes[i] for i in probabilities.argmax(axis=1)], probabilities

    return LoadedModel(
        pk=version.pk,
        model_name=version.model.name,
        version=version.version,
        form=version.serving_form,
        features=features,
        classes=classes,
        stage=version.stage,
        _predict=predict,
    )


@dataclass
class Route:
    primary: LoadedModel
    canary: LoadedModel | None = None
    canary_percent: float = 0.0
    shadow: LoadedModel | None = None
    error: str = ""


class ServingRuntime:
    def __init__(self):
        self._lock = threading.Lock()
        self._generation = object()
        self._routes = {}  # (model name, environment) -> Route
        self._last_good = {}  # (model name, environment) -> Route that served before a failed reload
        self._models = {}  # version pk -> LoadedModel
        self._recorded = {}  # (model name, environment) -> pk of the version this process recorded as last served
        self._by_number = {}  # (model name, version number) -> LoadedModel

    def _check_signal(self):
        generation = signal_read()
        if generation != self._generation:
            with self._lock:
                if generation != self._generation:
                    # Loaded versions are dropped too: a rebuilt fast form (build_fast_forms) is picked
                    # up, and a changed file is caught by the checksum on the next load.
                    self._last_good.update(self._routes)
                    self._routes, self._models, self._by_number = {}, {}, {}
                    self._generation = generation

    def _loaded(self, version):
        model = self._models.get(version.pk)
        if model is None:
            model = version_load(version)
            self._models[version.pk] = model
        return model

    def route_cached(self, model_name, environment="production"):
        """The route if this process holds it now (no database needed to answer), else None."""
        self._check_signal()
        route = self._routes.get((model_name, environment))
        return route if isinstance(route, Route) else None

    def route(self, model_name, environment="production"):
        """The route of a model's environment; NotFound if nothing is deployed there."""
        self._check_signal()
        key = (model_name, environment)
        route = self._routes.get(key)
        if isinstance(route, ModelNotServable):
            raise route  # remembered until the signal moves: a broken file is not re-read per request
        if route is not None:
            return route
        deployments = active_deployments(model_name=model_name, environment=environment)
        primary = next((d for d in deployments if d.mode == Deployment.Mode.PRIMARY), None)
        if primary is None:
            if not RegisteredModel.objects.filter(name=model_name).exists():
                raise NotFound(f"model {model_name!r} does not exist", field="model")
            raise NotFound(f"{model_name} has no version in {environment}", field="model")
        try:
            route = Route(primary=self._loaded(primary.version))
        except ApplicationError as exc:
            logger.error("cannot serve %s v%s: %s", model_name, primary.version.version, exc)
            previous = self._last_good.get(key) or self._last_served(key, refused=primary.version)
            if previous is None:
                refused = ModelNotServable(f"{model_name} v{primary.version.version} cannot be served: {exc}")
                self._routes[key] = refused
                raise refused from None
            # Keep answering with the version that worked, and say why on /health.
            route = Route(
                primary=previous.primary,
                error=f"v{primary.version.version} refused: {exc}; still serving v{previous.primary.version}"
                + ("" if key in self._last_good else " (the version last served, as recorded)"),
            )
            self._routes[key] = route
            return route
        for deployment in deployments:
            try:
                if deployment.mode == Deployment.Mode.CANARY:
                    route.canary, route.canary_percent = self._loaded(deployment.version), deployment.traffic_percent
                elif deployment.mode == Deployment.Mode.SHADOW:
                    route.shadow = self._loaded(deployment.version)
            except ApplicationError as exc:  # a broken canary or shadow never takes the primary down
                route.error = f"{deployment.mode} v{deployment.version.version} refused: {exc}"
        self._routes[key] = route
        self._last_good.pop(key, None)
        if self._recorded.get(key) != route.primary.pk:
            last_served_record(version=primary.version, environment=environment)
            self._recorded[key] = route.primary.pk
        return route

    def _last_served(self, key, *, refused):
        """A route on the version that last served `key` in any process (persisted), if it is not the
        refused one and its own files still check out; None otherwise."""
        version = last_served_version(model_name=key[0], environment=key[1])
        if version is None or version.pk == refused.pk:
            return None
        try:
            return Route(primary=self._loaded(version))
        except ApplicationError as exc:
            logger.error("the version last served, %s v%s, cannot be served either: %s", key[0], version.version, exc)
            return None

    def version(self, model_name, number, *, by=None):
        """A given version by number: one in Staging or Production for anyone, any other only for a user
        holding predict_any_version (shadow testing, debugging). Kept until the change signal moves."""
        self._check_signal()
        key = (model_name, number)
        model = self._by_number.get(key)
        if model is None:
            model = self._loaded(version_get(model_name=model_name, version=number))
            self._by_number[key] = model
        if model.stage not in _OPEN_STAGES:
            permission_require(
                by,
                "serving.predict_any_version",
                doing=f"call {model_name} v{number} by number (it is {model.stage}, not in Staging or Production)",
            )
        return model

    def loaded_versions(self):
        return [(m.model_name, m.version, m.form) for m in self._models.values()]


runtime = ServingRuntime()
