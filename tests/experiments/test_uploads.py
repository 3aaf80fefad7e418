"""A CSV over DATASET_INLINE_MAX_BYTES is never held in the web process: it is copied to the artifact store
a chunk at a time while hashed, answered 202 with a status URL, and profiled by a worker (here Celery runs
what is queued in this process, as a worker would; tests/e2e/test_run.py does it with a real worker)."""

import contextlib
import tracemalloc

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile, TemporaryUploadedFile
from django.urls import reverse

from core.storage import artifact_path
from experiments import services
from experiments.models import DatasetUpload, DatasetVersion
from governance.models import AuditEntry
from tests.helpers import worker_runs_what_is_queued

pytestmark = pytest.mark.django_db

CSV = b"x,y,label\n" + b"".join(b"%d,%d,%s\n" % (i, i % 7, b"ab"[i % 2 : i % 2 + 1]) for i in range(400))


@pytest.fixture(autouse=True)
def small_inline_limit(settings, tmp_path):
    settings.DATASET_INLINE_MAX_BYTES = 1000  # CSV above is ~4 KB: the worker's path
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"


@contextlib.contextmanager
def _worker_runs_what_is_queued(django_capture_on_commit_callbacks):
    """The upload's task, queued when its row commits, runs at once in this process as a worker would run it."""
    with worker_runs_what_is_queued(), django_capture_on_commit_callbacks(execute=True):
        yield


def _post(api_client, content=CSV, name="big", target="label"):
    return api_client.post(
        "/api/v1/datasets",
        {"name": name, "target": target, "file": SimpleUploadedFile(f"{name}.csv", content)},
        format="multipart",
    )


def _staged():
    folder = artifact_path("uploads")
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_large_upload_is_profiled_by_a_worker_and_its_status_url_says_when_it_is_stored(
    api_client, user, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as queued:
        accepted = _post(api_client)
    assert accepted.status_code == 202, accepted.content
    body = accepted.json()
    assert (body["status"], body["name"], body["size_bytes"], body["version"]) == ("PENDING", "big", len(CSV), None)
    assert accepted["Location"] == body["status_url"] == reverse("dataset-upload-detail", args=[body["upload"]])
    assert len(_staged()) == 1  # on disk, not in the web process
    assert not DatasetVersion.objects.exists()
    assert api_client.get(body["status_url"]).json()["status"] == "PENDING"

    with _worker_runs_what_is_queued(django_capture_on_commit_callbacks):
        for callback in queued:  # the commit: the task is queued, and run
            callback()

    done = api_client.get(body["status_url"]).json()
    assert done["status"] == "DONE", done
    assert done["finished_at"] is not None
    version = DatasetVersion.objects.get()
    assert done["version"]["id"] == version.pk
    assert (version.name, version.n_rows, version.size_bytes, version.target) == ("big", 400, len(CSV), "label")
    assert version.sha256 == body["sha256"]
    assert artifact_path(version.path).read_bytes() == CSV
    assert _staged() == []  # the staged copy is gone
    entry = AuditEntry.objects.get(action="dataset.created")
    assert entry.actor_name == user.username  # the uploader's, though a worker stored it


def test_a_large_csv_the_worker_refuses_says_why_and_naming_the_field(api_client, django_capture_on_commit_callbacks):
    bad = CSV + b"ten,1,a\n"
    with _worker_runs_what_is_queued(django_capture_on_commit_callbacks):
        accepted = _post(api_client, content=bad)
    assert accepted.status_code == 202
    failed = api_client.get(accepted.json()["status_url"]).json()
    assert failed["status"] == "FAILED"
    assert failed["field"] == "file"
    assert "column 'x'" in failed["error"]
    assert "line 402" in failed["error"]
    assert not DatasetVersion.objects.exists()
    assert _staged() == []


@pytest.mark.parametrize(
    ("content", "target", "field", "words"),
    [
        (b"\x00\x01" * 1000, "label", "file", "binary"),
        (CSV, "churned", "target", "'churned' is not in the file"),
        (b"x,label\n" + b"\xff\xfe,a\n" * 300, "label", "file", "not UTF-8"),
    ],
)
def test_what_the_first_bytes_show_is_refused_at_once(api_client, content, target, field, words):
    response = _post(api_client, content=content, target=target)
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert words in response.json()["error"]
    assert not DatasetUpload.objects.exists()
    assert _staged() == []


@pytest.mark.django_db(transaction=True)  # the row commits in the request, as in production
def test_a_csv_a_fast_worker_refused_before_the_answer_is_a_202_saying_so_not_a_503(api_client):
    """The worker may finish before the web answers: its refusal is the upload's status, not a broker error."""
    with worker_runs_what_is_queued():
        accepted = _post(api_client, content=CSV + b"ten,1,a\n")
    assert accepted.status_code == 202, accepted.content
    assert accepted.json()["status"] == "FAILED"
    assert accepted.json()["field"] == "file"


def test_an_unknown_upload_is_a_404_naming_it(api_client):
    response = api_client.get(reverse("dataset-upload-detail", args=[999999]))
    assert response.status_code == 404
    assert response.json() == {"error": "dataset upload 999999 does not exist", "field": "upload_id"}


def test_content_already_stored_is_answered_at_once(api_client, django_capture_on_commit_callbacks):
    with _worker_runs_what_is_queued(django_capture_on_commit_callbacks):
        first = _post(api_client)
    again = _post(api_client, name="other-name")
    assert again.status_code == 200
    assert again.json()["name"] == "big"
    assert again.json()["created"] is False
    assert DatasetUpload.objects.count() == 1  # no second upload
    assert _staged() == []
    assert first.status_code == 202


def test_the_web_process_holds_one_chunk_of_a_large_upload_not_the_file(user, tmp_path):
    """The finding: a 49 MB CSV took a web worker from 312 MiB to 1 GiB. Now the upload's memory in the
    request is a chunk, whatever the file's size (an 8 MB file here, already on disk as Django puts it)."""
    rows = b"".join(b"%d,%d.5,%s\n" % (i, i % 97, b"ab"[i % 2 : i % 2 + 1]) for i in range(600_000))
    file = TemporaryUploadedFile("big.csv", "text/csv", 0, None)
    file.write(b"x,y,label\n" + rows)
    file.size = file.tell()
    file.seek(0)
    assert file.size > 8_000_000
    tracemalloc.start()
    try:
        outcome = services.dataset_version_upload_file(name="big", file=file, target="label", by=user)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        file.close()
    assert peak < 1_000_000, f"{peak:,} bytes at the peak for a {file.size:,}-byte upload"
    assert outcome.upload is not None
