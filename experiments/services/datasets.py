"""Dataset versions: made from a built-in maker or an uploaded CSV, identified by content."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.errors import ApplicationError, BrokerUnavailable, InvalidInput
from core.permissions import permission_require
from core.storage import (
    ArtifactIntegrityError,
    artifact_path,
    artifact_read_verified,
    artifact_write,
    artifact_write_chunks,
)
from experiments import datasets as data
from experiments.models import DatasetUpload, DatasetVersion
from governance.models import AuditAction
from governance.services import audit_record

if TYPE_CHECKING:
    import pandas as pd
    from django.core.files.uploadedfile import UploadedFile

    from core.permissions import Actor

logger = logging.getLogger(__name__)


def _dataset_version_store(*, name, source, frame, content, target, build_params, by):
    """The version holding `content`: the existing one, or a new row and file. Returns (version, created)."""
    sha256 = data.sha256_bytes(content)
    existing = DatasetVersion.objects.filter(sha256=sha256).first()
    if existing:
        _same_target(existing, target)
        return existing, False
    schema = data.infer_schema(frame, target=target)
    relative = f"datasets/{sha256}.csv"
    artifact_write(relative, content)  # content-addressed: a rolled-back row leaves a harmless file
    try:
        with transaction.atomic():
            version = DatasetVersion.objects.create(
                name=name,
                sha256=sha256,
                source=source,
                build_params=build_params,
                target=target,
                n_rows=len(frame),
                n_columns=len(frame.columns),
                size_bytes=len(content),
                schema=schema,
                path=relative,
                created_by=by,
            )
            audit_record(
                actor=by,
                action=AuditAction.DATASET_CREATED,
                obj=version,
                after={"name": name, "sha256": sha256, "rows": len(frame), "source": source},
            )
    except IntegrityError:
        # The same content was stored by a concurrent request a moment ago; if no row holds it,
        # the error is about this row itself (a constraint it breaks) and must not be hidden.
        stored = DatasetVersion.objects.filter(sha256=sha256).first()
        if stored is None:
            raise
        return stored, False
    return version, True


def dataset_version_builtin(
    *, name: str, n_samples: int | None = None, seed: int | None = None, by: Actor = None
) -> tuple[DatasetVersion, bool]:
    """The version of a built-in dataset (made deterministically); returns (version, created)."""
    frame, target, build_params = data.builtin_frame(name, n_samples=n_samples, seed=seed)
    return _dataset_version_store(
        name=name,
        source=DatasetVersion.Source.BUILTIN,
        frame=frame,
        content=data.frame_to_csv_bytes(frame),
        target=target,
        build_params=build_params,
        by=by,
    )


def dataset_version_upload(*, name: str, content: bytes, target: str, by: Actor) -> tuple[DatasetVersion, bool]:
    """A version from uploaded CSV bytes, validated and schema-inferred; returns (version, created)."""
    permission_require(by, "experiments.add_datasetversion", doing="upload datasets")
    name, target = _upload_names(name, target)
    frame = data.parse_csv(content, target=target, max_bytes=settings.DATASET_UPLOAD_MAX_BYTES)
    return _dataset_version_store(
        name=name,
        source=DatasetVersion.Source.UPLOAD,
        frame=frame,
        content=content,
        target=target,
        build_params={},
        by=by,
    )


@dataclass(frozen=True)
class UploadOutcome:
    """What an upload did: stored (or found) a version at once, or left a large file for a worker."""

    version: DatasetVersion | None = None
    created: bool = False
    upload: DatasetUpload | None = None


def dataset_version_upload_file(*, name: str, file: UploadedFile, target: str, by: Actor) -> UploadOutcome:
    """Like dataset_version_upload, from an uploaded file; an oversized file is refused before it is read.

    A file over DATASET_INLINE_MAX_BYTES is not read into this process: it is copied to the artifact store
    a chunk at a time while hashed, and a worker profiles it (dataset_upload_profile). Content already
    stored is answered at once either way."""
    permission_require(by, "experiments.add_datasetversion", doing="upload datasets")
    data.check_size(file.size, max_bytes=settings.DATASET_UPLOAD_MAX_BYTES)
    if file.size <= settings.DATASET_INLINE_MAX_BYTES:
        version, created = dataset_version_upload(name=name, content=file.read(), target=target, by=by)
        return UploadOutcome(version=version, created=created)
    name, target = _upload_names(name, target)
    file.seek(0)
    data.check_csv_head(file.read(64 * 1024), target=target)
    file.seek(0)
    relative = f"uploads/{uuid.uuid4().hex}.csv"
    sha256 = artifact_write_chunks(relative, file.chunks())
    existing = DatasetVersion.objects.filter(sha256=sha256).first()
    if existing:
        artifact_path(relative).unlink(missing_ok=True)
        _same_target(existing, target)
        return UploadOutcome(version=existing)
    queued = []  # whether the broker took the task, once the row has committed
    with transaction.atomic():
        upload = DatasetUpload.objects.create(
            name=name, target=target, sha256=sha256, size_bytes=file.size, path=relative, created_by=by
        )
        transaction.on_commit(lambda: queued.append(_upload_queue(upload.pk)))
    upload.refresh_from_db()  # a fast worker may have profiled it already
    if queued == [False]:
        raise BrokerUnavailable(upload.error, extra={"upload": upload.pk})
    return UploadOutcome(upload=upload)


def _upload_names(name, target):
    name = (name or "").strip()
    if not name:
        raise InvalidInput("is required", field="name")
    if name in data.BUILTIN_DATASETS:
        raise InvalidInput(f"{name!r} is the name of a built-in dataset", field="name")
    target = (target or "").strip()
    if not target:
        raise InvalidInput("is required: the column holding the labels", field="target")
    return name, target


def _same_target(existing, target):
    if existing.target != target:
        raise InvalidInput(
            f"this content is already stored as {existing} with target column {existing.target!r}", field="target"
        )


def _upload_queue(upload_id):
    from experiments.tasks import profile_dataset_upload

    """Hand the upload to the workers; False (and the upload FAILED with the reason) if the broker is down."""
    try:
        profile_dataset_upload.apply_async(args=[upload_id])
    except Exception as exc:  # kombu's errors for an unreachable broker vary by transport
        reason = f"could not queue the upload: the task broker is unreachable ({type(exc).__name__}: {exc})"
        logger.warning("upload %s: %s", upload_id, reason)
        _upload_finish(DatasetUpload.objects.get(pk=upload_id), status=DatasetUpload.Status.FAILED, error=reason)
        return False
    return True


def _upload_finish(upload, *, status, error="", field="", version=None):
    artifact_path(upload.path).unlink(missing_ok=True)
    upload.status, upload.error, upload.field, upload.version = status, error, field, version
    upload.finished_at = timezone.now()
    upload.save(update_fields=["status", "error", "field", "version", "finished_at"])


def dataset_upload_profile(*, upload_id: int) -> DatasetUpload:
    """A worker's half of a large upload: parse, validate and store the staged CSV as a version (audited as
    the uploader's), or record why it was refused; the staged file is removed either way. Safe to run twice."""
    with transaction.atomic():
        upload = DatasetUpload.objects.select_for_update().get(pk=upload_id)
        if upload.is_terminal:
            return upload
        upload.status = DatasetUpload.Status.PROFILING
        upload.save(update_fields=["status"])
    try:
        content = artifact_read_verified(upload.path, upload.sha256)
        frame = data.parse_csv(content, target=upload.target, max_bytes=settings.DATASET_UPLOAD_MAX_BYTES)
        version, _ = _dataset_version_store(
            name=upload.name,
            source=DatasetVersion.Source.UPLOAD,
            frame=frame,
            content=content,
            target=upload.target,
            build_params={},
            by=upload.created_by,
        )
        _same_target(version, upload.target)  # stored meanwhile by a concurrent upload, with another target?
    except ArtifactIntegrityError as exc:  # the staged file changed or went missing
        _upload_finish(upload, status=DatasetUpload.Status.FAILED, error=exc.message, field="file")
    except ApplicationError as exc:
        _upload_finish(upload, status=DatasetUpload.Status.FAILED, error=exc.message, field=exc.field or "")
    else:
        _upload_finish(upload, status=DatasetUpload.Status.DONE, version=version)
    return upload


def dataset_resolve(
    *, ref: str, n_samples: int | None = None, seed: int | None = None, by: Actor = None
) -> DatasetVersion:
    """The dataset version a user means by `ref`: a built-in name, an uploaded name (latest), a sha256 prefix,
    or `name@sha256-prefix` as the API writes a run's dataset (`customer_churn@e2ca24a29668`)."""
    ref = (ref or "").strip()
    if not ref:
        raise InvalidInput("is required", field="dataset")
    if "@" in ref:
        return _dataset_by_name_and_hash(ref, n_samples=n_samples, seed=seed)
    if ref in data.BUILTIN_DATASETS:
        return dataset_version_builtin(name=ref, n_samples=n_samples, seed=seed, by=by)[0]
    if n_samples is not None or seed is not None:
        raise InvalidInput("n_samples and seed apply to built-in datasets only", field="n_samples")
    version = DatasetVersion.objects.filter(name=ref).order_by("-created_at", "-id").first()
    if version is None and len(ref) >= 8:
        matches = list(DatasetVersion.objects.filter(sha256__startswith=ref.lower())[:2])
        if len(matches) > 1:
            raise InvalidInput(f"sha256 prefix {ref!r} matches several versions", field="dataset")
        version = matches[0] if matches else None
    if version is None:
        uploaded = sorted(set(DatasetVersion.objects.exclude(source="builtin").values_list("name", flat=True)))
        known = ", ".join([*data.BUILTIN_DATASETS, *uploaded[:20]])
        raise InvalidInput(f"unknown dataset {ref!r}; known: {known}", field="dataset")
    return version


def _dataset_by_name_and_hash(ref, *, n_samples, seed):
    name, _, prefix = ref.rpartition("@")
    if n_samples is not None or seed is not None:
        raise InvalidInput(
            f"n_samples and seed make a new sample of a built-in dataset; {ref!r} names a stored version",
            field="n_samples",
        )
    if len(prefix) < 8 or any(c not in "0123456789abcdef" for c in prefix.lower()):
        raise InvalidInput(f"{ref!r}: after @ give at least 8 hex digits of the version's sha256", field="dataset")
    matches = list(DatasetVersion.objects.filter(name=name, sha256__startswith=prefix.lower())[:2])
    if len(matches) > 1:
        raise InvalidInput(f"{ref!r} matches several versions of {name!r}: give more of the sha256", field="dataset")
    if not matches:
        raise InvalidInput(f"no version of dataset {name!r} has a sha256 starting {prefix!r}", field="dataset")
    return matches[0]


def dataset_frame_load(*, version: DatasetVersion) -> pd.DataFrame:
    """The dataset's rows, after checking the file's checksum and validating it against its schema."""
    content = artifact_read_verified(version.path, version.sha256)
    frame = data.read_frame(content, version.schema)
    data.validate_frame(frame, version.schema)
    return frame
