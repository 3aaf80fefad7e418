"""Drift of a version's logged traffic against its training data: exact, by sketches, and its bad inputs."""

import datetime as dt

import numpy as np
import pytest
from django.utils import timezone

from monitoring import stattests
from monitoring.models import DriftResult, DriftRun, FeatureSketch, ReferenceColumn
from monitoring.services import drift_compute, drift_reference_build, hours_compute
from monitoring.services.aggregates import sketch_numeric
from monitoring.services.drift import binned_drift, sketches_merge
from monitoring.windows import hour_floor, window_parse
from serving.models import PredictionLog
from tests.monitoring.conftest import hours_ago

pytestmark = pytest.mark.django_db


def _verdicts(run):
    return {r.name: r for r in DriftResult.objects.filter(run=run, verdict=True)}


def test_exact_drift_flags_the_shifted_feature_with_evidentlys_numbers(churn_reference, churn_frame, log_writer):
    current = churn_frame.sample(300, random_state=1).reset_index(drop=True)
    current["monthly_charges"] = current["monthly_charges"] + 30
    log_writer.write(current, at=hours_ago(2), per_request=10)

    run = drift_compute(model_name="churn", window=window_parse("24h"))

    assert run.status == DriftRun.Status.OK
    assert run.rows == 300
    verdicts = _verdicts(run)
    assert verdicts["monthly_charges"].drifted is True
    assert verdicts["tenure_months"].drifted is False
    assert verdicts["contract_type"].drifted is False
    # The numbers are the stattests' on the same data (which equal Evidently's: test_stattests).
    reference = stattests.numeric_sample(churn_frame["monthly_charges"].to_numpy(dtype=float))
    expected = stattests.column_drift(reference, stattests.numeric_sample(current["monthly_charges"].to_numpy()))
    assert verdicts["monthly_charges"].method == expected.method == "ks"  # reference of 800 rows: KS
    assert verdicts["monthly_charges"].score == pytest.approx(expected.score, rel=1e-12)
    categorical = stattests.column_drift(
        stattests.categorical_sample(churn_frame["contract_type"]),
        stattests.categorical_sample(current["contract_type"]),
    )
    assert verdicts["contract_type"].score == pytest.approx(categorical.score, rel=1e-12)
    # PSI and Jensen–Shannon stored beside the deciding test, as effect sizes.
    methods = set(DriftResult.objects.filter(run=run, name="monthly_charges").values_list("method", flat=True))
    assert methods == {"ks", "psi", "jensenshannon"}
    # Prediction drift: predicted classes against the training labels, confidence against held-out's.
    assert set(verdicts) >= {"prediction", "confidence"}
    assert verdicts["prediction"].role == ReferenceColumn.Role.PREDICTION
    assert verdicts["prediction"].current_rows == 300


def test_a_window_with_too_few_rows_says_not_enough_data(churn_reference, churn_frame, log_writer):
    log_writer.write(churn_frame.head(40), at=hours_ago(1))

    run = drift_compute(model_name="churn", window=window_parse("24h"))

    assert run.status == DriftRun.Status.NOT_ENOUGH_DATA
    assert run.rows == 40
    assert "at least 100" in run.message
    assert run.dataset_drift is None
    assert not run.results.exists()


def test_an_empty_window_says_not_enough_data(churn_reference):
    run = drift_compute(model_name="churn", window=window_parse("1h"))
    assert run.status == DriftRun.Status.NOT_ENOUGH_DATA
    assert run.rows == 0


def test_a_version_without_reference_says_so_and_how_to_fix_it(churn_version):
    run = drift_compute(model_name="churn", window=window_parse("24h"))
    assert run.status == DriftRun.Status.NO_REFERENCE
    assert "manage.py monitor references --model churn" in run.message


def test_nulls_a_constant_column_and_an_unseen_category_get_defined_answers(churn_reference, churn_frame, log_writer):
    current = churn_frame.sample(200, random_state=2).reset_index(drop=True)
    current["total_charges"] = None  # missing everywhere: the model's imputer fills it; drift has no values
    current["age"] = 40  # constant
    current["payment_method"] = "crypto"  # never seen in training
    log_writer.write(current, at=hours_ago(1), per_request=20)

    run = drift_compute(model_name="churn", window=window_parse("24h"))

    verdicts = _verdicts(run)
    assert verdicts["total_charges"].drifted is None
    assert "not enough data" in verdicts["total_charges"].note
    assert verdicts["age"].drifted is True
    assert np.isfinite(verdicts["age"].score)
    assert verdicts["payment_method"].method == "chisquare"
    assert verdicts["payment_method"].score == 0.0
    assert verdicts["payment_method"].drifted is True
    assert run.n_columns == 9  # total_charges could not be tested: the share is over the others
    assert run.share_drifted == pytest.approx(run.n_drifted / 9)


def test_sketches_merged_over_hours_equal_the_raw_computation_on_fixed_bins(churn_reference, churn_frame, log_writer):
    rows = []
    for hours in (5, 4, 3):
        part = churn_frame.sample(150, random_state=hours).reset_index(drop=True)
        part["tenure_months"] = part["tenure_months"] * (1 + hours / 10)
        log_writer.write(part, at=hours_ago(hours), per_request=15)
        rows.append(part)
    raw = np.concatenate([part["tenure_months"].to_numpy(dtype=float) for part in rows])
    start = hour_floor(timezone.now()) - dt.timedelta(hours=6)
    hours_compute(model_name="churn", start=start, end=hour_floor(timezone.now()) + dt.timedelta(hours=1))

    column = churn_reference.columns.get(name="tenure_months")
    sketches = FeatureSketch.objects.filter(model_name="churn", name="tenure_months")
    assert sketches.count() == 3
    merged = sketches_merge(sketches)
    direct = sketch_numeric(raw, column.sketch_edges)
    assert merged.bin_counts.tolist() == direct["bin_counts"]
    assert merged.n == direct["n"] == 450
    assert merged.minimum == direct["minimum"]
    assert merged.maximum == direct["maximum"]

    run = drift_compute(model_name="churn", window=window_parse("24h"), kind=DriftRun.Computation.SKETCH)
    assert run.status == DriftRun.Status.OK
    assert run.rows == 450
    stored = DriftResult.objects.get(run=run, name="tenure_months", method="psi")
    expected = binned_drift(
        reference_counts=column.reference_bin_counts, current_counts=direct["bin_counts"], groups=column.sketch_groups
    )
    assert stored.score == pytest.approx(expected["psi"], abs=1e-12)
    assert stored.detail["ks_distance_lower"] <= stored.detail["ks_distance_upper"]
    # The KS distance on the raw values lies within the sketch's bounds.
    reference_values = np.sort(churn_frame["tenure_months"].to_numpy(dtype=float))
    distance = _ks_distance(reference_values, np.sort(raw))
    assert stored.detail["ks_distance_lower"] - 1e-12 <= distance <= stored.detail["ks_distance_upper"] + 1e-12
    # Category counts add up exactly: a categorical column's sketch verdict is Evidently's test itself.
    exact = drift_compute(model_name="churn", window=window_parse("24h"))
    assert (
        DriftResult.objects.get(run=run, name="contract_type", verdict=True).score
        == DriftResult.objects.get(run=exact, name="contract_type", verdict=True).score
    )


def _ks_distance(a, b):
    points = np.concatenate([a, b])
    return float(
        np.max(np.abs(np.searchsorted(a, points, "right") / len(a) - np.searchsorted(b, points, "right") / len(b)))
    )


def test_the_reference_keeps_sorted_values_counts_and_a_calibration(churn_reference, churn_frame):
    column = churn_reference.columns.get(name="monthly_charges")
    values = np.frombuffer(column.sorted_values, dtype="<f8")
    assert values.tolist() == sorted(churn_frame["monthly_charges"].tolist())
    assert column.std == pytest.approx(float(np.std(churn_frame["monthly_charges"])))
    categories = churn_reference.columns.get(name="contract_type").counts
    assert categories == churn_frame["contract_type"].value_counts().to_dict()
    assert churn_reference.vector_layout[:2] == ["tenure_months", "monthly_charges"]
    assert 0.5 < churn_reference.validation_accuracy <= 1
    assert set(churn_reference.calibration) <= {"yes", "no"}
    assert churn_reference.calibration
    # Rebuilding gives the same rows.
    again = drift_reference_build(version=churn_reference.version)
    assert again.pk == churn_reference.pk
    assert again.columns.count() == churn_reference.columns.count()


def test_the_log_keeps_a_typed_vector_and_the_class_position(churn_version, churn_frame, log_writer):
    log_writer.write(churn_frame.head(3), at=hours_ago(0))
    row = PredictionLog.objects.order_by("id").first()
    first = churn_frame.iloc[0]
    numeric = [f["name"] for f in churn_version.signature["features"] if f["dtype"] != "categorical"]
    assert row.features == [float(first[name]) for name in numeric]
    assert churn_version.signature["classes"][row.predicted_index] == row.prediction
