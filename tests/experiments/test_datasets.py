"""Datasets: built-in makers, content hashing, schema inference, CSV faults, checksum on load."""

import pytest

from core.errors import InvalidInput
from core.storage import ArtifactIntegrityError, artifact_path
from experiments import services
from experiments.datasets import make_customer_churn
from experiments.models import DatasetVersion
from governance.models import AuditEntry

pytestmark = pytest.mark.django_db

GOOD_CSV = b"age,plan,label\n31,basic,no\n45,pro,yes\n28,basic,no\n52,,yes\n"


@pytest.mark.parametrize(
    ("name", "target", "rows"), [("iris", "target", 150), ("wine", "target", 178), ("breast_cancer", "target", 569)]
)
def test_builtin_datasets_from_scikit_learn(name, target, rows):
    version, created = services.dataset_version_builtin(name=name)
    assert created
    assert (version.target, version.n_rows) == (target, rows)
    assert version.schema["class_balance"]
    assert all(" " not in column for column in version.feature_names)


def test_customer_churn_is_deterministic_for_a_seed_and_size():
    first, _ = services.dataset_version_builtin(name="customer_churn", n_samples=300, seed=7)
    again, created = services.dataset_version_builtin(name="customer_churn", n_samples=300, seed=7)
    other, _ = services.dataset_version_builtin(name="customer_churn", n_samples=300, seed=8)
    assert again.pk == first.pk
    assert not created
    assert other.sha256 != first.sha256
    assert first.build_params == {"n_samples": 300, "seed": 7}
    frame = make_customer_churn(n_samples=300, seed=7)
    assert {"tenure_months", "monthly_charges", "support_calls", "contract_type", "churned"} <= set(frame.columns)
    assert set(frame["churned"]) == {"yes", "no"}


def test_n_samples_is_refused_for_fixed_size_datasets_and_out_of_range():
    with pytest.raises(InvalidInput) as error:
        services.dataset_version_builtin(name="iris", n_samples=100)
    assert error.value.field == "n_samples"
    with pytest.raises(InvalidInput):
        services.dataset_version_builtin(name="customer_churn", n_samples=5)


def test_upload_infers_the_schema_and_the_same_content_is_the_same_version(user):
    version, created = services.dataset_version_upload(name="plans", content=GOOD_CSV, target="label", by=user)
    assert created
    columns = {column["name"]: column for column in version.schema["columns"]}
    assert columns["age"]["dtype"] == "integer"
    assert (columns["age"]["min"], columns["age"]["max"]) == (28.0, 52.0)
    assert columns["plan"]["dtype"] == "categorical"
    assert columns["plan"]["null_count"] == 1
    assert version.schema["class_balance"] == {"no": 2, "yes": 2}
    again, created_again = services.dataset_version_upload(name="plans", content=GOOD_CSV, target="label", by=user)
    assert again.pk == version.pk
    assert not created_again
    assert AuditEntry.objects.filter(action="dataset.created").count() == 1


@pytest.mark.parametrize(
    ("content", "target", "field", "message"),
    [
        (b"age,plan,label\n", "label", "file", "no rows"),
        (b"", "label", "file", "empty"),
        (b"age,plan\n1,a\n2,b\n", "label", "target", "'label' is not in the file"),
        (b"age,label\n1,x\n2,y\n3,x\n4,y\nabc,x\n", "label", "file", "column 'age' is numeric but line 6 holds 'abc'"),
        (b"\x00\x01\x02garbage" * 1000, "label", "file", "binary"),
        (b"\xff\xfe\xfa" * 1000, "label", "file", "not UTF-8"),
        (b"a,a,label\n1,2,x\n", "label", "file", "duplicate column names: a"),
        (b"age,label\n1,x\n2,x\n", "label", "target", "single class"),
        (b"age,label\n1,x\n2,\n", "label", "target", "empty values"),
    ],
)
def test_bad_csv_is_refused_naming_the_problem_and_nothing_is_stored(user, content, target, field, message):
    with pytest.raises(InvalidInput) as error:
        services.dataset_version_upload(name="bad", content=content, target=target, by=user)
    assert error.value.field == field
    assert message in error.value.message
    assert not DatasetVersion.objects.exists()
    assert not AuditEntry.objects.exclude(action="role.granted").exists()


def test_oversized_upload_is_refused_before_parsing(user, settings):
    settings.DATASET_UPLOAD_MAX_BYTES = 100
    with pytest.raises(InvalidInput, match="limit is 100 bytes"):
        services.dataset_version_upload(name="big", content=b"a,label\n" + b"1,x\n" * 50, target="label", by=user)


def test_builtin_names_are_reserved_and_name_and_target_are_required(user):
    with pytest.raises(InvalidInput) as error:
        services.dataset_version_upload(name="iris", content=GOOD_CSV, target="label", by=user)
    assert error.value.field == "name"
    with pytest.raises(InvalidInput) as error:
        services.dataset_version_upload(name="x", content=GOOD_CSV, target=" ", by=user)
    assert error.value.field == "target"


def test_resolve_by_builtin_name_upload_name_and_sha_prefix(user):
    version, _ = services.dataset_version_upload(name="plans", content=GOOD_CSV, target="label", by=user)
    assert services.dataset_resolve(ref="plans") == version
    assert services.dataset_resolve(ref=version.sha256[:10]) == version
    assert services.dataset_resolve(ref="iris").name == "iris"
    with pytest.raises(InvalidInput, match="unknown dataset 'nope'; known: iris"):
        services.dataset_resolve(ref="nope")


def test_loading_refuses_a_file_changed_on_disk():
    version, _ = services.dataset_version_builtin(name="iris")
    assert len(services.dataset_frame_load(version=version)) == 150
    artifact_path(version.path).write_bytes(b"sepal_length_cm,target\n1,setosa\n")
    with pytest.raises(ArtifactIntegrityError, match="sha256"):
        services.dataset_frame_load(version=version)
