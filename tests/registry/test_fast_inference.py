"""The ONNX form is kept only when it agrees with scikit-learn on labels AND probabilities."""

import numpy as np
import pandas as pd
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from registry.fast_inference import feeds_from_frame, onnx_convert, onnx_session


class ThresholdedLogisticRegression(LogisticRegression):
    """Says "virginica" from a probability of 0.2 on: a decision threshold tuned after training, which the
    ONNX converter of LogisticRegression knows nothing about (its labels stay the argmax)."""

    def predict(self, X):
        return np.where(self.predict_proba(X)[:, 1] >= 0.2, self.classes_[1], self.classes_[0])


def _register_converter():
    from skl2onnx import update_registered_converter
    from skl2onnx.operator_converters.linear_classifier import convert_sklearn_linear_classifier
    from skl2onnx.shape_calculators.linear_classifier import calculate_linear_classifier_output_shapes

    update_registered_converter(
        ThresholdedLogisticRegression,
        "ThresholdedLogisticRegression",
        calculate_linear_classifier_output_shapes,
        convert_sklearn_linear_classifier,
        options={"zipmap": [True, False, "columns"], "nocl": [True, False], "raw_scores": [True, False]},
    )


def _versicolor_or_virginica():
    iris = load_iris(as_frame=True)
    frame = iris.frame[iris.frame["target"] > 0]
    features = frame.drop(columns="target").rename(columns=lambda name: name.replace(" (cm)", "_cm").replace(" ", "_"))
    labels = frame["target"].map({1: "versicolor", 2: "virginica"})
    return features, labels


def _faithful():
    features, labels = _versicolor_or_virginica()
    pipeline = Pipeline([("scale", StandardScaler()), ("model", LogisticRegression(max_iter=500))])
    pipeline.fit(features, labels)
    return pipeline, features, [{"name": name, "dtype": "numeric"} for name in features.columns]


def test_an_onnx_form_whose_labels_differ_is_refused_even_with_equal_probabilities():
    _register_converter()
    features, labels = _versicolor_or_virginica()
    pipeline = Pipeline([("scale", StandardScaler()), ("model", ThresholdedLogisticRegression(max_iter=500))])
    pipeline.fit(features, labels)
    signature = [{"name": name, "dtype": "numeric"} for name in features.columns]
    # The probabilities agree to float32 precision; only the labels of the rows between 0.2 and 0.5 differ.
    argmax = pipeline.classes_[pipeline.predict_proba(features).argmax(axis=1)]
    assert (pipeline.predict(features) != argmax).any()
    model_bytes, difference, note = onnx_convert(pipeline=pipeline, features=signature, frame=features, tolerance=1e-4)
    assert model_bytes is None
    assert difference < 1e-4
    assert "labels differ" in note
    assert "serving scikit-learn" in note


def test_a_faithful_onnx_form_is_kept():
    pipeline, features, signature = _faithful()
    model_bytes, difference, note = onnx_convert(pipeline=pipeline, features=signature, frame=features, tolerance=1e-4)
    assert model_bytes is not None
    assert difference < 1e-4
    assert "ONNX matches scikit-learn on 100 rows" in note
    onnx_labels, _ = onnx_session(model_bytes).run(None, feeds_from_frame(features, signature))
    assert list(onnx_labels) == list(pipeline.predict(features))


def test_categorical_features_with_missing_values_convert_and_agree():
    """Text columns go to ONNX as strings, and a missing one (None or NaN) as the empty string the
    converted imputer treats as missing: scikit-learn imputes it, so must ONNX, or the form is refused."""
    from experiments.datasets import make_customer_churn
    from experiments.trainers import params_validate, train

    frame = make_customer_churn(n_samples=300)
    frame.loc[::7, "contract_type"] = None
    frame.loc[3::11, "payment_method"] = np.nan
    result = train(
        frame, target="churned", algorithm="logistic_regression", params=params_validate("logistic_regression", {})
    )
    features = frame.drop(columns="churned")
    signature = [
        {"name": name, "dtype": "numeric" if pd.api.types.is_numeric_dtype(features[name]) else "categorical"}
        for name in features.columns
    ]
    assert [f["name"] for f in signature if f["dtype"] == "categorical"] == [
        "contract_type",
        "internet_service",
        "payment_method",
    ]

    model_bytes, difference, note = onnx_convert(
        pipeline=result.pipeline, features=signature, frame=features, tolerance=1e-4
    )

    assert model_bytes is not None, note
    assert difference < 1e-4
    feeds = feeds_from_frame(features, signature)
    assert feeds["contract_type"].dtype == object
    assert feeds["contract_type"].shape == (300, 1)
    assert feeds["contract_type"][0, 0] == feeds["payment_method"][3, 0] == ""  # missing, as the imputer reads it
    assert feeds["tenure_months"].dtype == np.float32
    onnx_labels, _ = onnx_session(model_bytes).run(None, feeds)
    assert list(onnx_labels) == list(result.pipeline.predict(features))


def test_a_session_runs_on_one_thread_on_the_cpu_without_a_warning():
    """One thread a session: a worker process is one of several on the machine's cores."""
    import warnings

    pipeline, features, signature = _faithful()
    model_bytes, _, _ = onnx_convert(pipeline=pipeline, features=signature, frame=features, tolerance=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # onnxruntime warns of a provider it does not have, then falls back
        session = onnx_session(model_bytes)
    assert session.get_session_options().intra_op_num_threads == 1
    assert session.get_providers() == ["CPUExecutionProvider"]


def test_the_onnx_form_declares_the_opsets_the_pinned_onnxruntime_runs():
    """Opset 17 at most (ai.onnx.ml 3 at most), whatever newer opsets a later skl2onnx would default to
    (22 with skl2onnx 1.20): the ONNX form must load in the onnxruntime the serving processes have."""
    import onnx

    pipeline, features, signature = _faithful()
    model_bytes, _, _ = onnx_convert(pipeline=pipeline, features=signature, frame=features, tolerance=1e-4)
    opsets = {entry.domain: entry.version for entry in onnx.load_from_string(model_bytes).opset_import}
    assert opsets == {"": 17, "ai.onnx.ml": 1}  # LinearClassifier is an ai.onnx.ml operator of version 1


def test_a_pipeline_of_three_steps_gives_its_classifier_s_probabilities_as_an_array():
    """The option that makes the classifier's probabilities one array (no per-row maps) goes to the last step,
    whatever the number of steps before it."""
    from sklearn.impute import SimpleImputer

    features, labels = _versicolor_or_virginica()
    pipeline = Pipeline(
        [("impute", SimpleImputer()), ("scale", StandardScaler()), ("model", LogisticRegression(max_iter=500))]
    ).fit(features, labels)
    signature = [{"name": name, "dtype": "numeric"} for name in features.columns]
    model_bytes, difference, note = onnx_convert(pipeline=pipeline, features=signature, frame=features, tolerance=1e-4)
    assert model_bytes is not None, note
    assert difference < 1e-4


def test_the_tolerance_is_the_largest_difference_kept_and_the_note_says_the_labels_match():
    pipeline, features, signature = _faithful()
    _, difference, _ = onnx_convert(pipeline=pipeline, features=signature, frame=features, tolerance=1.0)
    assert difference > 0  # float32 in ONNX against float64 in scikit-learn

    at_the_tolerance, _, _ = onnx_convert(pipeline=pipeline, features=signature, frame=features, tolerance=difference)
    assert at_the_tolerance is not None

    refused, _, note = onnx_convert(pipeline=pipeline, features=signature, frame=features, tolerance=difference / 2)
    assert refused is None
    assert note == (
        f"ONNX disagrees with scikit-learn (max probability difference {difference:.2e}, labels match); "
        "serving scikit-learn"
    )


class Unconvertible(LogisticRegression):
    """An estimator skl2onnx has no converter for."""


def test_a_pipeline_skl2onnx_cannot_convert_is_served_by_scikit_learn_with_the_reason(caplog):
    features, labels = _versicolor_or_virginica()
    pipeline = Pipeline([("scale", StandardScaler()), ("model", Unconvertible(max_iter=500))]).fit(features, labels)
    signature = [{"name": name, "dtype": "numeric"} for name in features.columns]
    with caplog.at_level("INFO", logger="registry.fast_inference"):
        model_bytes, difference, note = onnx_convert(
            pipeline=pipeline, features=signature, frame=features, tolerance=1e-4
        )
    assert (model_bytes, difference) == (None, None)
    [record] = [r for r in caplog.records if r.name == "registry.fast_inference"]
    reason = str(record.args[0])
    assert type(record.args[0]).__name__ == "MissingShapeCalculator"
    assert record.getMessage() == f"ONNX conversion failed: {reason}"
    assert len(reason) > 300
    assert note == f"ONNX conversion failed (MissingShapeCalculator: {reason[:300]}); serving scikit-learn"
