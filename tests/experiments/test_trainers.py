"""Trainers: param validation, and what each algorithm records."""

import json

import pytest

from core.errors import InvalidInput
from experiments.datasets import builtin_frame, make_customer_churn
from experiments.trainers import TRAINERS, params_validate, train


def test_defaults_are_filled_and_cli_strings_are_typed():
    params = params_validate("random_forest", {"n_estimators": "50", "max_depth": "none"})
    assert params["n_estimators"] == 50
    assert params["max_depth"] is None
    assert params["max_features"] == "sqrt"
    assert params["test_size"] == 0.2


def test_c_param_is_an_alias_of_c():
    assert params_validate("logistic_regression", {"c_param": "0.1"})["C"] == 0.1
    with pytest.raises(InvalidInput, match="given twice"):
        params_validate("logistic_regression", {"c_param": 0.1, "C": 1})


@pytest.mark.parametrize(
    ("algorithm", "params", "field", "message"),
    [
        ("random_forest", {"n_trees": 5}, "params.n_trees", "unknown parameter for random_forest"),
        ("random_forest", {"n_estimators": "many"}, "params.n_estimators", "must be an integer"),
        ("random_forest", {"n_estimators": 2.5}, "params.n_estimators", "must be an integer"),
        ("random_forest", {"n_estimators": True}, "params.n_estimators", "boolean"),
        ("random_forest", {"n_estimators": 0}, "params.n_estimators", "must be >= 1"),
        ("random_forest", {"max_features": "all"}, "params.max_features", "must be one of sqrt, log2"),
        ("logistic_regression", {"C": 0}, "params.C", "must be > 0"),
        ("gradient_boosting", {"subsample": 1.5}, "params.subsample", "must be <= 1"),
        ("gradient_boosting", {"learning_rate": "nan"}, "params.learning_rate", "finite"),
        ("gradient_boosting", {"test_size": 0.9}, "params.test_size", "must be <= 0.5"),
    ],
)
def test_bad_params_are_refused_naming_the_param(algorithm, params, field, message):
    with pytest.raises(InvalidInput) as error:
        params_validate(algorithm, params)
    assert error.value.field == field
    assert message in error.value.message


def test_unknown_algorithm():
    with pytest.raises(InvalidInput) as error:
        params_validate("svm", {})
    assert error.value.field == "algorithm"


def _train(algorithm, frame, target, **params):
    history, progress = [], []
    result = train(
        frame,
        target=target,
        algorithm=algorithm,
        params=params_validate(algorithm, params),
        on_progress=lambda fraction, message: progress.append(fraction),
        on_history=lambda key, step, value: history.append((key, step, value)),
    )
    return result, history, progress


@pytest.mark.parametrize("algorithm", sorted(TRAINERS))
def test_each_algorithm_records_the_metrics_and_artifacts(algorithm):
    frame = make_customer_churn(n_samples=300, seed=1)
    result, _, progress = _train(
        algorithm, frame, "churned", **({"n_estimators": 10} if algorithm != "logistic_regression" else {})
    )
    for key in (
        "accuracy",
        "precision_macro",
        "recall_macro",
        "f1_macro",
        "log_loss",
        "roc_auc",
        "training_time_seconds",
        "inference_time_ms",
        "model_size_bytes",
    ):
        assert key in result.metrics, key
    assert 0.5 < result.metrics["accuracy"] <= 1
    assert result.metrics["model_size_bytes"] == len(result.model_bytes)
    assert result.classes == ["no", "yes"]
    matrix = json.loads(result.artifacts["confusion_matrix.json"])
    assert sum(map(sum, matrix["matrix"])) == 60  # the 20 % held out
    assert result.artifacts["confusion_matrix.png"].startswith(b"\x89PNG")
    assert "macro avg" in json.loads(result.artifacts["classification_report.json"])
    assert progress == sorted(progress)
    prediction = result.pipeline.predict(frame.drop(columns=["churned"]).head(3))
    assert set(prediction) <= {"no", "yes"}


def test_roc_auc_only_for_binary_targets():
    frame, target, _ = builtin_frame("iris")
    result, _, _ = _train("logistic_regression", frame, target)
    assert "roc_auc" not in result.metrics
    assert result.metrics["accuracy"] > 0.85


def test_gradient_boosting_history_has_one_point_per_stage():
    frame, target, _ = builtin_frame("iris")
    _, history, _ = _train("gradient_boosting", frame, target, n_estimators=12)
    steps = [step for key, step, _ in history if key == "val_log_loss"]
    assert steps == list(range(1, 13))


def test_random_forest_history_is_accuracy_by_forest_size():
    frame, target, _ = builtin_frame("iris")
    _, history, _ = _train("random_forest", frame, target, n_estimators=20)
    assert [step for key, step, _ in history if key == "val_accuracy"] == [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]


def test_logistic_regression_history_is_a_learning_curve():
    frame = make_customer_churn(n_samples=400, seed=2)
    _, history, _ = _train("logistic_regression", frame, "churned")
    steps = [step for key, step, _ in history if key == "val_accuracy"]
    assert steps == sorted(steps)
    assert steps[-1] == 320
    assert {key for key, _, _ in history} == {"val_accuracy", "train_accuracy"}
