"""Backup and restore of the whole platform: the database (pg_dump's custom format on PostgreSQL, SQLite's
online backup otherwise) and the artifact store, in one tar with a manifest.

The manifest records the audit log's head (id and hash) at backup time. A restore goes into an empty
database and artifact directory only, and then verifies the restored audit chain *and* that its head is
the recorded one: a backup that was cut short, edited, or restored with another AUDIT_LOG_KEY fails.
"""

import datetime as dt
import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import connection

from core.errors import Conflict, InvalidInput
from governance.models import AuditEntry
from governance.services import audit_chain_verify, audit_head
from registry.models import ModelVersion

FORMAT = "mlops-site-backup/1"
MANIFEST = "manifest.json"
ARTIFACTS = "artifacts.tar"
DUMPS = {"postgresql": "database.pgdump", "sqlite": "database.sqlite3"}


@dataclass(frozen=True)
class BackupResult:
    path: Path
    manifest: dict


@dataclass(frozen=True)
class RestoreResult:
    manifest: dict
    audit_entries: int
    audit_head: str
    artifact_files: int


def _pg_env():
    db = connection.settings_dict
    env = {
        **os.environ,
        "PGDATABASE": db["NAME"],
        "PGHOST": db["HOST"] or "127.0.0.1",
        "PGPORT": str(db["PORT"] or 5432),
    }
    if db["USER"]:
        env["PGUSER"] = db["USER"]
    if db["PASSWORD"]:
        env["PGPASSWORD"] = db["PASSWORD"]
    return env


def _run(command):
    try:
        result = subprocess.run(command, env=_pg_env(), capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise Conflict(f"{command[0]} is not installed (PostgreSQL's client tools)", field="database")
    if result.returncode != 0:
        raise Conflict(f"{command[0]} failed: {result.stderr.strip()[-2000:]}", field="database")
    return result


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _dump_database(target):
    if connection.vendor == "postgresql":
        _run(["pg_dump", "--format=custom", "--no-owner", "--no-privileges", f"--file={target}"])
    elif connection.vendor == "sqlite":
        connection.ensure_connection()
        with sqlite3.connect(target) as copy:
            connection.connection.backup(copy)
    else:
        raise Conflict(f"backups of {connection.vendor} databases are not supported", field="database")


def backup_create(*, path):
    """Write the database and the artifact store to the tar at `path`; returns its manifest."""
    path = Path(path)
    if path.exists():
        raise Conflict(f"{path} exists: a backup never overwrites a file", field="path")
    head_id, head_hash = audit_head()
    artifact_root = Path(settings.ARTIFACT_ROOT)
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        dump = work / DUMPS[connection.vendor] if connection.vendor in DUMPS else work / "database"
        _dump_database(dump)
        artifacts = work / ARTIFACTS
        files = 0
        with tarfile.open(artifacts, "w") as archive:
            if artifact_root.is_dir():
                for item in sorted(artifact_root.rglob("*")):
                    if item.is_file() and not item.is_symlink():
                        archive.add(item, arcname=str(item.relative_to(artifact_root)), recursive=False)
                        files += 1
        manifest = {
            "format": FORMAT,
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
            "database": {"vendor": connection.vendor, "file": dump.name, "sha256": _sha256(dump)},
            "artifacts": {"file": ARTIFACTS, "files": files, "sha256": _sha256(artifacts)},
            "audit": {"entries": AuditEntry.objects.count(), "head_id": head_id, "head_hash": head_hash},
            "model_versions": ModelVersion.objects.count(),
            "source_commit": getattr(settings, "SOURCE_COMMIT", ""),
        }
        data = json.dumps(manifest, indent=2).encode()
        partial = path.with_name(path.name + ".partial")
        with tarfile.open(partial, "w") as archive:
            info = tarfile.TarInfo(MANIFEST)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
            archive.add(dump, arcname=dump.name)
            archive.add(artifacts, arcname=ARTIFACTS)
        partial.rename(path)
    return BackupResult(path=path, manifest=manifest)


def _database_is_empty():
    return not connection.introspection.table_names()


def _safe_members(archive, root):
    for member in archive.getmembers():
        target = (root / member.name).resolve()
        if not member.isfile() or root.resolve() not in target.parents:
            raise InvalidInput(f"the backup's artifacts hold an unsafe entry: {member.name!r}", field="path")
        yield member


def backup_restore(*, path):
    """Restore the backup at `path` into the configured database and ARTIFACT_ROOT, both empty, then verify
    the audit chain and that its head is the one the backup recorded."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"no backup at {path}", field="path")
    if not tarfile.is_tarfile(path):
        raise InvalidInput(f"{path} is not a backup: not a tar file", field="path")
    with tarfile.open(path) as archive, tempfile.TemporaryDirectory() as work:
        work = Path(work)
        names = set(archive.getnames())
        if MANIFEST not in names:
            raise InvalidInput(f"{path} is not a backup: no {MANIFEST}", field="path")
        manifest = json.loads(archive.extractfile(MANIFEST).read())
        if manifest.get("format") != FORMAT:
            raise InvalidInput(f"unknown backup format {manifest.get('format')!r}", field="path")
        vendor = manifest["database"]["vendor"]
        if vendor != connection.vendor:
            raise Conflict(
                f"the backup is of a {vendor} database, DATABASE_URL is {connection.vendor}", field="database"
            )
        for section in ("database", "artifacts"):
            name = manifest[section]["file"]
            if name not in names:
                raise InvalidInput(f"the backup has no {name}", field="path")
            archive.extract(name, work, filter="data")
            if _sha256(work / name) != manifest[section]["sha256"]:
                raise InvalidInput(f"{name} does not match the manifest's checksum (damaged backup)", field="path")
        if not _database_is_empty():
            raise Conflict("the database is not empty: restore into a fresh database (createdb)", field="database")
        artifact_root = Path(settings.ARTIFACT_ROOT)
        if artifact_root.exists() and any(artifact_root.iterdir()):
            raise Conflict(f"ARTIFACT_ROOT {artifact_root} is not empty: restore into an empty one", field="artifacts")

        dump = work / manifest["database"]["file"]
        if vendor == "postgresql":
            _run(
                [
                    "pg_restore",
                    "--no-owner",
                    "--no-privileges",
                    "--exit-on-error",
                    "--single-transaction",
                    f"--dbname={connection.settings_dict['NAME']}",
                    str(dump),
                ]
            )
        else:
            connection.close()
            shutil.copyfile(dump, connection.settings_dict["NAME"])
        connection.close()  # the next query sees the restored tables

        artifact_root.mkdir(parents=True, exist_ok=True)
        with tarfile.open(work / manifest["artifacts"]["file"]) as artifacts:
            members = list(_safe_members(artifacts, artifact_root))
            artifacts.extractall(artifact_root, members=members, filter="data")

    report = audit_chain_verify(expect_head=manifest["audit"]["head_hash"] if manifest["audit"]["head_id"] else "")
    if not report.intact:
        broken = f" at entry #{report.broken.pk}" if report.broken is not None else ""
        raise Conflict(f"restored, but the audit log is not intact{broken}: {report.why}", field="audit")
    if report.head_hash != manifest["audit"]["head_hash"]:
        raise Conflict("restored, but the audit log's head is not the one the backup recorded", field="audit")
    return RestoreResult(
        manifest=manifest, audit_entries=report.checked, audit_head=report.head_hash, artifact_files=len(members)
    )
