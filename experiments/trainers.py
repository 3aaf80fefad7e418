"""Trainers: the algorithms a run can use, their validated hyperparameters, and training itself.

Pure of the database: `train()` takes a frame and reports progress and metric
history through callbacks; services persist what it returns.
"""

import io
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import joblib
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from core.errors import InvalidInput
from experiments.datasets import sha256_bytes


@dataclass(frozen=True)
class ParamSpec:
    """One hyperparameter: its type, default, bounds and the other names it answers to."""

    name: str
    type: type
    default: object
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    choices: tuple = ()
    nullable: bool = False
    aliases: tuple = ()
    help: str = ""

    @property
    def type_name(self):
        return self.type.__name__

    def parse(self, raw, *, field_name):
        """Coerce a CLI string or a JSON value to this parameter's type, within bounds."""
        value = raw
        if isinstance(value, str):
            text = value.strip()
            if self.nullable and text.lower() in ("none", "null", ""):
                return None
            if self.type is int:
                try:
                    value = int(text)
                except ValueError:
                    raise InvalidInput(f"must be an integer, got {raw!r}", field=field_name) from None
            elif self.type is float:
                try:
                    value = float(text)
                except ValueError:
                    raise InvalidInput(f"must be a number, got {raw!r}", field=field_name) from None
            else:
                value = text
        elif value is None:
            if self.nullable:
                return None
            raise InvalidInput("must not be null", field=field_name)
        elif isinstance(value, bool):
            raise InvalidInput(f"must be {self.type.__name__}, got a boolean", field=field_name)
        elif self.type is int:
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if not isinstance(value, int):
                raise InvalidInput(f"must be an integer, got {raw!r}", field=field_name)
        elif self.type is float:
            if not isinstance(value, (int, float)):
                raise InvalidInput(f"must be a number, got {raw!r}", field=field_name)
            value = float(value)
        elif not isinstance(value, str):
            raise InvalidInput(f"must be a string, got {raw!r}", field=field_name)
        if self.type is float and not np.isfinite(value):
            raise InvalidInput(f"must be a finite number, got {raw!r}", field=field_name)
        if self.choices and value not in self.choices:
            raise InvalidInput(f"must be one of {', '.join(map(str, self.choices))}; got {raw!r}", field=field_name)
        if self.min is not None and (value < self.min or (self.min_exclusive and value == self.min)):
            bound = ">" if self.min_exclusive else ">="
            raise InvalidInput(f"must be {bound} {self.min}, got {raw!r}", field=field_name)
        if self.max is not None and value > self.max:
            raise InvalidInput(f"must be <= {self.max}, got {raw!r}", field=field_name)
        return value


# What every run records (roc_auc for binary targets only); a sweep can pick its best run by any of them.
RECORDED_METRICS = (
    "accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "roc_auc",
    "log_loss",
    "training_time_seconds",
    "inference_time_ms",
    "model_size_bytes",
)

COMMON_PARAMS = (
    ParamSpec("test_size", float, 0.2, min=0.05, max=0.5, help="Share of rows held out for evaluation."),
    # scikit-learn seeds numpy's legacy generator, which takes 0 to 2**32 - 1.
    ParamSpec("random_state", int, 42, min=0, max=2**32 - 1, help="Seed of the split and the estimator."),
)


@dataclass(frozen=True)
class Trainer:
    """An algorithm: its own hyperparameters and how to build the estimator from them."""

    name: str
    description: str
    params: tuple
    build: Callable[[dict], object]
    scale_numeric: bool = False

    @property
    def all_params(self):
        return (*COMMON_PARAMS, *self.params)


def _logistic_regression(params):
    return LogisticRegression(
        C=params["C"],
        max_iter=params["max_iter"],
        class_weight=params["class_weight"],
        random_state=params["random_state"],
    )


def _random_forest(params):
    return RandomForestClassifier(
        n_estimators=params["n_estimators"],
        max_depth=params["max_depth"],
        min_samples_leaf=params["min_samples_leaf"],
        max_features=params["max_features"],
        class_weight=params["class_weight"],
        random_state=params["random_state"],
        n_jobs=1,
    )


def _gradient_boosting(params):
    return GradientBoostingClassifier(
        n_estimators=params["n_estimators"],
        learning_rate=params["learning_rate"],
        max_depth=params["max_depth"],
        subsample=params["subsample"],
        random_state=params["random_state"],
    )


_CLASS_WEIGHT = ParamSpec(
    "class_weight",
    str,
    None,
    choices=("balanced",),
    nullable=True,
    help="'balanced' reweights classes by inverse frequency.",
)

# What the step of a run's metric history counts (the x axis of its charts), per algorithm.
HISTORY_STEP = {
    "random_forest": "trees in the forest",
    "gradient_boosting": "boosting stage",
    "logistic_regression": "training rows (learning curve)",
}

TRAINERS = {
    trainer.name: trainer
    for trainer in (
        Trainer(
            "logistic_regression",
            "Multinomial logistic regression on scaled features.",
            (
                ParamSpec(
                    "C",
                    float,
                    1.0,
                    min=0,
                    min_exclusive=True,
                    aliases=("c", "c_param"),
                    help="Inverse regularisation strength.",
                ),
                ParamSpec("max_iter", int, 1000, min=10, max=100_000),
                _CLASS_WEIGHT,
            ),
            _logistic_regression,
            scale_numeric=True,
        ),
        Trainer(
            "random_forest",
            "A random forest of decision trees.",
            (
                ParamSpec("n_estimators", int, 100, min=1, max=5000),
                ParamSpec("max_depth", int, None, min=1, max=1000, nullable=True),
                ParamSpec("min_samples_leaf", int, 1, min=1),
                ParamSpec("max_features", str, "sqrt", choices=("sqrt", "log2")),
                _CLASS_WEIGHT,
            ),
            _random_forest,
        ),
        Trainer(
            "gradient_boosting",
            "Gradient-boosted decision trees; records a metric per boosting stage.",
            (
                ParamSpec("n_estimators", int, 100, min=1, max=5000),
                ParamSpec("learning_rate", float, 0.1, min=0, min_exclusive=True, max=10),
                ParamSpec("max_depth", int, 3, min=1, max=100),
                ParamSpec("subsample", float, 1.0, min=0, min_exclusive=True, max=1),
            ),
            _gradient_boosting,
        ),
    )
}


def trainer_get(algorithm):
    try:
        return TRAINERS[algorithm]
    except KeyError:
        raise InvalidInput(
            f"unknown algorithm {algorithm!r}; choose one of {', '.join(TRAINERS)}", field="algorithm"
        ) from None


def params_validate(algorithm, raw_params, *, field_prefix="params"):
    """Typed, complete params for an algorithm (defaults filled in); InvalidInput on any fault."""
    trainer = trainer_get(algorithm)
    specs = {}
    for spec in trainer.all_params:
        for name in (spec.name, *spec.aliases):
            specs[name] = spec
    values = {}
    for name, raw in (raw_params or {}).items():
        spec = specs.get(name)
        if spec is None:
            known = ", ".join(spec.name for spec in trainer.all_params)
            raise InvalidInput(f"unknown parameter for {algorithm}; known: {known}", field=f"{field_prefix}.{name}")
        if spec.name in values:
            raise InvalidInput(f"given twice (as {spec.name} and an alias)", field=f"{field_prefix}.{name}")
        values[spec.name] = spec.parse(raw, field_name=f"{field_prefix}.{name}")
    for spec in trainer.all_params:
        values.setdefault(spec.name, spec.default)
    return values


@dataclass
class TrainResult:
    pipeline: Pipeline
    classes: list
    feature_names: list
    metrics: dict
    model_bytes: bytes
    model_sha256: str
    artifacts: dict = field(default_factory=dict)  # relative path -> bytes


def _preprocessor(frame, *, scale_numeric):
    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
    categorical = [c for c in frame.columns if c not in numeric]
    numeric_steps = [("impute", SimpleImputer(strategy="median"))]
    if scale_numeric:
        numeric_steps.append(("scale", StandardScaler()))
    transformers = [("numeric", Pipeline(numeric_steps), numeric)]
    if categorical:
        transformers.append(
            (
                "categorical",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="most_frequent")),
                        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                    ]
                ),
                categorical,
            )
        )
    return ColumnTransformer(transformers)


def _no_progress(fraction, message):
    pass


def _no_history(key, step, value):
    pass


def train(frame, *, target, algorithm, params, on_progress=_no_progress, on_history=_no_history):
    """Fit `algorithm` on `frame` and evaluate it on a held-out split.

    on_progress(fraction, message) reports how far the fit is; on_history(key, step, value)
    receives the metric history (boosting stages, forest size, or a learning curve).
    """
    trainer = trainer_get(algorithm)
    features = frame.drop(columns=[target])
    labels = frame[target].astype(str)
    smallest_class = labels.value_counts().min()
    X_train, X_test, y_train, y_test = train_test_split(
        features,
        labels,
        test_size=params["test_size"],
        random_state=params["random_state"],
        stratify=labels if smallest_class >= 2 else None,
    )
    if y_train.nunique() < 2:
        raise InvalidInput("the training split holds a single class; use more rows", field="dataset")
    on_progress(0.05, "preprocessing")
    preprocessor = _preprocessor(features, scale_numeric=trainer.scale_numeric)
    Xt_train = preprocessor.fit_transform(X_train)
    Xt_test = preprocessor.transform(X_test)
    estimator = trainer.build(params)

    started = time.perf_counter()
    if isinstance(estimator, GradientBoostingClassifier):
        _fit_boosting(estimator, Xt_train, y_train, Xt_test, y_test, on_progress, on_history)
    elif isinstance(estimator, RandomForestClassifier):
        _fit_forest(estimator, Xt_train, y_train, Xt_test, y_test, on_progress, on_history)
    else:
        _fit_with_learning_curve(
            estimator, trainer, params, Xt_train, y_train, Xt_test, y_test, on_progress, on_history
        )
    training_time = time.perf_counter() - started

    on_progress(0.85, "evaluating")
    pipeline = Pipeline([("preprocess", preprocessor), ("model", estimator)])
    classes = [str(c) for c in estimator.classes_]
    predicted = estimator.predict(Xt_test)
    probabilities = estimator.predict_proba(Xt_test)
    metrics = {
        "accuracy": accuracy_score(y_test, predicted),
        "precision_macro": precision_score(y_test, predicted, average="macro", zero_division=0),
        "recall_macro": recall_score(y_test, predicted, average="macro", zero_division=0),
        "f1_macro": f1_score(y_test, predicted, average="macro", zero_division=0),
        "log_loss": log_loss(y_test, probabilities, labels=classes),
        "training_time_seconds": training_time,
    }
    if len(classes) == 2 and y_test.nunique() == 2:
        metrics["roc_auc"] = roc_auc_score(y_test, probabilities[:, 1])
    metrics["inference_time_ms"] = _single_row_latency_ms(pipeline, X_test)

    buffer = io.BytesIO()
    joblib.dump(pipeline, buffer, compress=3)
    model_bytes = buffer.getvalue()
    metrics["model_size_bytes"] = len(model_bytes)
    metrics = {key: float(value) for key, value in metrics.items()}

    on_progress(0.95, "writing artifacts")
    matrix = confusion_matrix(y_test, predicted, labels=classes)
    report = classification_report(y_test, predicted, labels=classes, zero_division=0, output_dict=True)
    artifacts = {
        "confusion_matrix.json": json.dumps({"labels": classes, "matrix": matrix.tolist()}, indent=2).encode(),
        "confusion_matrix.png": _confusion_matrix_png(matrix, classes),
        "classification_report.json": json.dumps(report, indent=2).encode(),
        "classification_report.txt": classification_report(y_test, predicted, labels=classes, zero_division=0).encode(),
    }
    return TrainResult(
        pipeline=pipeline,
        classes=classes,
        feature_names=list(features.columns),
        metrics=metrics,
        model_bytes=model_bytes,
        model_sha256=sha256_bytes(model_bytes),
        artifacts=artifacts,
    )


def _fit_boosting(estimator, X, y, X_val, y_val, on_progress, on_history):
    total = estimator.n_estimators

    def monitor(stage, _estimator, _locals):
        if stage % max(1, total // 50) == 0:
            on_progress(0.1 + 0.6 * (stage + 1) / total, f"boosting stage {stage + 1}/{total}")
        return False

    estimator.fit(X, y, monitor=monitor)
    on_progress(0.7, "scoring boosting stages")
    classes = list(estimator.classes_)
    for stage, probabilities in enumerate(estimator.staged_predict_proba(X_val), start=1):
        on_history("val_log_loss", stage, log_loss(y_val, probabilities, labels=classes))
        on_history("val_accuracy", stage, accuracy_score(y_val, estimator.classes_[probabilities.argmax(axis=1)]))


def _fit_forest(estimator, X, y, X_val, y_val, on_progress, on_history):
    """Grow the forest in up to ten chunks, scoring it after each: accuracy by forest size."""
    total = estimator.n_estimators
    sizes = sorted({max(1, round(total * k / 10)) for k in range(1, 11)})
    estimator.set_params(warm_start=True)
    for size in sizes:
        estimator.set_params(n_estimators=size).fit(X, y)
        on_history("val_accuracy", size, accuracy_score(y_val, estimator.predict(X_val)))
        on_progress(0.1 + 0.7 * size / total, f"{size}/{total} trees")
    estimator.set_params(warm_start=False)


def _fit_with_learning_curve(estimator, trainer, params, X, y, X_val, y_val, on_progress, on_history):
    """Fit on growing shares of the training rows: validation accuracy by training-set size."""
    n_rows = len(y)
    for share in (0.1, 0.25, 0.5, 0.75):
        n = int(n_rows * share)
        subset_y = y.iloc[:n]
        if n < 10 or subset_y.nunique() < 2:
            continue
        partial = trainer.build(params).fit(X[:n], subset_y)
        on_history("val_accuracy", n, accuracy_score(y_val, partial.predict(X_val)))
        on_history("train_accuracy", n, accuracy_score(subset_y, partial.predict(X[:n])))
        on_progress(0.1 + 0.6 * share, f"learning curve: {n} rows")
    estimator.fit(X, y)
    on_history("val_accuracy", n_rows, accuracy_score(y_val, estimator.predict(X_val)))
    on_history("train_accuracy", n_rows, accuracy_score(y, estimator.predict(X)))


def _single_row_latency_ms(pipeline, X_test, repeats=15):
    row = X_test.iloc[:1]
    pipeline.predict_proba(row)  # warm up
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        pipeline.predict_proba(row)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000


def _confusion_matrix_png(matrix, labels):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    size = max(3.5, 0.6 * len(labels) + 2)
    figure, axes = plt.subplots(figsize=(size, size), dpi=100)
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("actual")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), count in np.ndenumerate(matrix):
        axes.text(j, i, str(count), ha="center", va="center", color="white" if count > threshold else "black")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()
