"""Files under ARTIFACT_ROOT: written atomically, read back only if their checksum matches."""

import hashlib
import os
import tempfile
from pathlib import Path

from django.conf import settings

from core.errors import Conflict


class ArtifactIntegrityError(Conflict):
    """A stored file is missing or no longer matches its recorded sha256 (409)."""


def artifact_path(relative):
    root = Path(settings.ARTIFACT_ROOT)
    path = (root / relative).resolve()
    if root.resolve() not in path.parents:
        raise ArtifactIntegrityError(f"{relative!r} is outside the artifact store")
    return path


def artifact_write(relative, data):
    """Write bytes to ARTIFACT_ROOT/relative atomically; returns the sha256."""
    return artifact_write_chunks(relative, [data])


def artifact_write_chunks(relative, chunks):
    """Write an iterable of byte chunks to ARTIFACT_ROOT/relative atomically, never holding more than one
    chunk in memory; returns the sha256."""
    path = artifact_path(relative)
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(handle, "wb") as file:
            for chunk in chunks:
                digest.update(chunk)
                file.write(chunk)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return digest.hexdigest()


def artifact_read_verified(relative, sha256):
    """The bytes of a stored file, refused unless they hash to `sha256`."""
    path = artifact_path(relative)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactIntegrityError(f"{relative} is missing from the artifact store") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise ArtifactIntegrityError(f"{relative} has sha256 {actual[:12]}…, the registry recorded {sha256[:12]}…")
    return data
