"""What a serving process keeps and says: the routes it falls back on and the words on /health, the refusals
of a model it cannot answer for, the metrics and log of each prediction."""

import numpy as np
import pytest
from prometheus_client import REGISTRY

from core.errors import NotFound
from serving.models import PredictionLog
from serving.predict import ServedBy, error_logged, predict
from serving.runtime import ModelNotServable, ServingRuntime
from tests.serving.conftest import IRIS_ROW

pytestmark = pytest.mark.django_db


def _metric(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _tamper(settings, path):
    (settings.ARTIFACT_ROOT / path).write_bytes(b"not the registered model")


def test_a_refused_version_is_named_on_health_with_the_version_still_serving(
    production, register, promote, settings, django_assert_num_queries
):
    runtime = ServingRuntime()
    assert runtime.route("iris-clf").primary.version == 1
    v2 = register()
    promote(v2)
    _tamper(settings, v2.artifact_path)
    from serving.signal import signal_bump

    signal_bump()
    route = runtime.route("iris-clf")
    assert route.primary.version == 1
    assert route.error.startswith(f"v2 refused: {v2.artifact_path} has sha256 ")
    assert route.error.endswith("; still serving v1")
    with django_assert_num_queries(0):  # the fallback is held: the broken file is not read again per request
        assert runtime.route("iris-clf") is route
    # A process started after the refusal never served v1 itself: it falls back on the version last served,
    # as recorded by the process that did, and says so.
    fresh = ServingRuntime().route("iris-clf")
    assert fresh.primary.version == 1
    assert fresh.error.endswith("; still serving v1 (the version last served, as recorded)")


def test_nothing_to_fall_back_on_is_refused_once_and_remembered(register, promote, settings, caplog):
    version = register()
    promote(version)
    _tamper(settings, version.artifact_path)
    runtime = ServingRuntime()
    with caplog.at_level("ERROR", logger="serving.runtime"), pytest.raises(ModelNotServable) as refused:
        runtime.route("iris-clf")
    assert refused.value.message.startswith("iris-clf v1 cannot be served: ")
    reason = refused.value.message.removeprefix("iris-clf v1 cannot be served: ")
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "serving.runtime"] == [
        ("ERROR", f"cannot serve iris-clf v1: {reason}")
    ]
    assert refused.value.status_code == 409
    with pytest.raises(ModelNotServable) as again:
        runtime.route("iris-clf")
    assert again.value is refused.value  # not read and refused anew per request


def test_a_model_nothing_answers_is_not_found_naming_the_model(register):
    runtime = ServingRuntime()
    with pytest.raises(NotFound) as unknown:
        runtime.route("nope")
    assert (unknown.value.message, unknown.value.field) == ("model 'nope' does not exist", "model")
    register()
    with pytest.raises(NotFound) as empty:
        runtime.route("iris-clf", "staging")
    assert (empty.value.message, empty.value.field) == ("iris-clf has no version in staging", "model")


def test_a_broken_canary_is_named_and_the_primary_answers(production, register, put_on_traffic, settings):
    candidate = register()
    put_on_traffic(candidate, mode="canary", percent=50)
    _tamper(settings, candidate.artifact_path)
    route = ServingRuntime().route("iris-clf")
    assert (route.primary.version, route.canary) == (1, None)
    assert route.error.startswith(f"canary v2 refused: {candidate.artifact_path} has sha256 ")


def test_the_process_lists_what_it_has_loaded(production):
    runtime = ServingRuntime()
    assert runtime.loaded_versions() == []
    runtime.route("iris-clf")
    assert runtime.loaded_versions() == [("iris-clf", 1, "onnx")]


def test_a_prediction_says_what_answered_and_counts_its_confidence_per_row(production):
    labels = {"model": "iris-clf", "model_version": "1"}
    requests = _metric("prediction_requests_total", status="200", **labels)
    latency = _metric("prediction_latency_seconds_count", **labels)
    buckets = {le: _metric("prediction_confidence_bucket", le=le, **labels) for le in ("0.5", "0.9", "+Inf")}
    total = _metric("prediction_confidence_sum", **labels)
    for rows in (3, 12):  # one observation at a time below eight rows, one increment per bucket above
        answer = predict(model_name="iris-clf", payload=[IRIS_ROW] * rows, kind="records")
        assert (answer.rows, answer.served_by, answer.model.version) == (rows, ServedBy.PRIMARY, 1)
        assert len(answer.request_id) == 32
        assert 0 < answer.latency_ms < 5000
        assert np.asarray(answer.probabilities).shape == (rows, 3)
    confidence = float(np.asarray(answer.probabilities).max(axis=1)[0])
    assert _metric("prediction_requests_total", status="200", **labels) - requests == 2
    assert _metric("prediction_latency_seconds_count", **labels) - latency == 2
    assert _metric("prediction_confidence_sum", **labels) - total == pytest.approx(15 * confidence, rel=1e-6)
    for le, before in buckets.items():
        expected = 15 if confidence <= float(le) else 0
        assert _metric("prediction_confidence_bucket", le=le, **labels) - before == expected, le


def test_a_refusal_is_counted_with_its_status_and_kind(production):
    labels = {"model": "iris-clf", "model_version": "1"}
    refused = _metric("prediction_requests_total", status="422", **labels)
    errors = _metric("prediction_errors_total", error_type="Unprocessable", **labels)
    with pytest.raises(Exception, match="missing feature"):
        predict(model_name="iris-clf", payload=[{"x": 1}], kind="records")
    assert _metric("prediction_requests_total", status="422", **labels) - refused == 1
    assert _metric("prediction_errors_total", error_type="Unprocessable", **labels) - errors == 1
    unknown = _metric("prediction_requests_total", model="nope", model_version="", status="404")
    with pytest.raises(NotFound):
        predict(model_name="nope", payload=[IRIS_ROW], kind="records")
    assert _metric("prediction_requests_total", model="nope", model_version="", status="404") - unknown == 1


def test_columns_a_caller_already_has_are_predicted_as_given(production):
    columns = {name: [value, value] for name, value in IRIS_ROW.items()}
    answer = predict(model_name="iris-clf", payload=(columns, 2), kind="columns")  # (columns, n), as older callers
    assert answer.rows == 2
    assert answer.labels == predict(model_name="iris-clf", payload=columns, kind="columns").labels


def test_each_prediction_and_refusal_is_logged(production, settings):
    settings.PREDICTION_LOG_SYNC = True
    answer = predict(model_name="iris-clf", payload=[IRIS_ROW] * 2, kind="records", request_id="req-ok")
    rows = PredictionLog.objects.filter(request_id="req-ok").order_by("row")
    assert [(r.version, r.deployment_mode, r.prediction) for r in rows] == [(1, "primary", answer.labels[0])] * 2
    assert rows[0].latency_ms == pytest.approx(answer.latency_ms)
    error_logged(model_name="iris-clf", request_id="req-bad", error="instances[0]: missing feature", latency_ms=0.3)
    refused = PredictionLog.objects.get(request_id="req-bad")
    assert (refused.version, refused.deployment_mode, refused.error) == (0, "", "instances[0]: missing feature")
    assert refused.latency_ms == pytest.approx(0.3)
    settings.PREDICTION_LOG_ENABLED = False
    predict(model_name="iris-clf", payload=[IRIS_ROW], kind="records", request_id="req-unlogged")
    error_logged(model_name="iris-clf", request_id="req-unlogged", error="e", latency_ms=0.1)
    assert not PredictionLog.objects.filter(request_id="req-unlogged").exists()


def test_when_the_version_last_served_is_broken_too_it_is_said_and_nothing_served(
    production, register, promote, settings, caplog
):
    ServingRuntime().route("iris-clf")  # v1 served and recorded as last served
    v2 = register()
    promote(v2)
    _tamper(settings, v2.artifact_path)
    _tamper(settings, production.artifact_path)
    with pytest.raises(ModelNotServable):
        ServingRuntime().route("iris-clf")
    [said] = [r.getMessage() for r in caplog.records if "cannot be served either" in r.getMessage()]
    assert said.startswith(f"the version last served, iris-clf v1, cannot be served either: {production.artifact_path}")


def test_a_version_called_by_number_is_kept_until_the_signal_moves(production, django_assert_num_queries):
    runtime = ServingRuntime()
    first = runtime.version("iris-clf", 1)
    with django_assert_num_queries(0):
        assert runtime.version("iris-clf", 1) is first
    from serving.signal import signal_bump

    signal_bump()
    assert runtime.version("iris-clf", 1) is not first


def _pipeline(settings, version):
    import joblib

    return joblib.load(settings.ARTIFACT_ROOT / version.artifact_path)


def test_text_features_reach_the_onnx_form_as_text_and_a_missing_one_as_missing(register, train, settings):
    """A churn model served in its ONNX form answers as its scikit-learn pipeline does, a missing contract
    type (None) included."""
    import pandas as pd

    from experiments.datasets import make_customer_churn
    from serving.runtime import version_load

    version = register(name="churn", run=train(dataset="customer_churn", n_samples=200))
    assert version.serving_form == "onnx"
    rows = make_customer_churn(n_samples=20, seed=7).drop(columns="churned")
    columns = {name: rows[name].tolist() for name in rows.columns}
    columns["contract_type"][2] = columns["contract_type"][5] = None  # missing, as the runtime takes it
    columns["tenure_months"][4] = None

    loaded = version_load(version)
    expected = _pipeline(settings, version).predict_proba(pd.DataFrame(columns))
    # As a caller gives them (lists), and as serving.inputs checks them (arrays; NaN for a missing number).
    checked = {
        name: np.array(values, dtype=object if categorical else np.float64)
        for (name, categorical), values in zip(loaded.features, columns.values(), strict=True)
    }
    for given in (columns, checked):
        labels, probabilities = loaded.predict(given)

        assert probabilities.dtype == np.float32  # the ONNX form answered
        assert np.allclose(probabilities, expected, atol=1e-4)
        assert labels == [version.signature["classes"][i] for i in expected.argmax(axis=1)]
    assert checked["contract_type"][2] is None  # the caller's array is left as it was


def test_a_scikit_learn_version_naming_an_onnx_file_is_served_by_scikit_learn(register, settings):
    """A version an earlier release rebuilt to scikit-learn kept its ONNX file's name: the form decides."""
    import pandas as pd

    from registry.models import ModelVersion
    from serving.runtime import version_load

    version = register()
    ModelVersion.objects.filter(pk=version.pk).update(serving_form="sklearn")
    version.refresh_from_db()
    assert version.onnx_path

    loaded = version_load(version)
    labels, probabilities = loaded.predict({name: [value] for name, value in IRIS_ROW.items()})

    assert (loaded.form, probabilities.dtype) == ("sklearn", np.float64)
    expected = _pipeline(settings, version).predict_proba(
        pd.DataFrame({name: [value] for name, value in IRIS_ROW.items()})
    )
    assert np.array_equal(probabilities, expected)


def test_a_version_is_loaded_once_however_many_routes_use_it(production):
    """One model file's session in memory per process: the Production route and calls by number share it."""
    runtime = ServingRuntime()
    assert runtime.route("iris-clf").primary is runtime.version("iris-clf", 1)


def test_a_route_is_kept_until_the_signal_moves_and_its_version_recorded_once(production, django_assert_num_queries):
    """A request on a held route reads nothing from the database and writes nothing: the version last served
    is recorded when the route is loaded, not per request."""
    from serving.models import LastServed
    from serving.signal import signal_bump

    runtime = ServingRuntime()
    first = runtime.route("iris-clf")
    with django_assert_num_queries(0):
        assert runtime.route("iris-clf") is first
    recorded = LastServed.objects.get(environment="production").served_at
    signal_bump()
    again = runtime.route("iris-clf")  # loaded anew; the same version, so not recorded again
    assert again is not first
    assert LastServed.objects.get(environment="production").served_at == recorded
    with django_assert_num_queries(0):
        assert runtime.route("iris-clf") is again
