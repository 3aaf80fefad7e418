"""manage.py backup and restore on PostgreSQL: a backup of a platform with a registered model restores into
a fresh database and an empty artifact store, with the audit chain verified against the recorded head; a
damaged backup, a non-empty target and a head that is not the recorded one are refused."""

import io
import json
import os
import subprocess
import sys
import tarfile
import uuid

import psycopg2
import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from governance.models import AuditEntry
from registry.models import ModelVersion
from tests.e2e.processes import BASE_DIR, database_url

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith("postgres"), reason="restores with pg_restore: PostgreSQL"
    ),
]


@pytest.fixture
def fresh_database():
    """Makes empty databases on the same server (dropped afterwards); each call returns a DATABASE_URL."""
    server = database_url().rsplit("/", 1)[0]
    admin = psycopg2.connect(server + "/postgres")
    admin.autocommit = True
    made = []

    def make():
        name = f"{connection.settings_dict['NAME']}_restore_{uuid.uuid4().hex[:8]}"
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return f"{server}/{name}"

    try:
        yield make
    finally:
        with admin.cursor() as cursor:
            for name in made:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _restore(path, url, artifact_root):
    return subprocess.run(
        [sys.executable, "manage.py", "restore", str(path)],
        cwd=BASE_DIR,
        env={**os.environ, "DATABASE_URL": url, "ARTIFACT_ROOT": str(artifact_root)},
        capture_output=True,
        text=True,
        timeout=180,
    )


def _files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def backup(register, settings, tmp_path):
    register()
    path = tmp_path / "platform.tar"
    out = io.StringIO()
    call_command("backup", str(path), stdout=out)
    assert "Backup written" in out.getvalue()
    return path


def test_backup_restores_into_a_fresh_database_with_the_audit_chain_verified(
    backup, fresh_database, settings, tmp_path
):
    with tarfile.open(backup) as archive:
        manifest = json.loads(archive.extractfile("manifest.json").read())
    entries = AuditEntry.objects.count()
    assert manifest["audit"]["entries"] == entries > 0
    restored_artifacts = tmp_path / "restored-artifacts"
    target = fresh_database()
    result = _restore(backup, target, restored_artifacts)
    assert result.returncode == 0, result.stderr
    assert f"audit log intact: {entries} entries, head {manifest['audit']['head_hash']}" in result.stdout

    with psycopg2.connect(target) as restored, restored.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), max(entry_hash) FILTER (WHERE id = %s) FROM governance_auditentry",
            [manifest["audit"]["head_id"]],
        )
        assert cursor.fetchone() == (entries, manifest["audit"]["head_hash"])
        cursor.execute("SELECT count(*) FROM registry_modelversion")
        assert cursor.fetchone()[0] == ModelVersion.objects.count() == 1
    original = _files(settings.ARTIFACT_ROOT)
    assert original
    assert _files(restored_artifacts) == original

    # Again into the same, now full, database: refused, nothing changed.
    again = _restore(backup, target, tmp_path / "other-artifacts")
    assert again.returncode == 1
    assert "not empty" in again.stderr

    # A backup whose recorded head is not the restored chain's (cut short, or its manifest edited): exit 1.
    def other_head(manifest):
        manifest["audit"]["head_hash"] = "0" * 64

    wrong = _restore(_rewrite(backup, tmp_path, other_head), fresh_database(), tmp_path / "wrong-head")
    assert wrong.returncode == 1
    assert "audit log is not intact" in wrong.stderr
    assert "expected head" in wrong.stderr


def _rewrite(backup, tmp_path, change):
    """The backup with its manifest changed by `change(manifest)`."""
    changed = tmp_path / "changed.tar"
    with tarfile.open(backup) as source, tarfile.open(changed, "w") as target:
        for member in source.getmembers():
            data = source.extractfile(member).read()
            if member.name == "manifest.json":
                manifest = json.loads(data)
                change(manifest)
                data = json.dumps(manifest).encode()
                member.size = len(data)
            target.addfile(member, io.BytesIO(data))
    return changed


def test_damaged_backups_and_full_databases_are_refused(backup, tmp_path):
    def damaged(manifest):
        manifest["artifacts"]["sha256"] = "0" * 64

    with pytest.raises(CommandError, match="checksum"):
        call_command("restore", str(_rewrite(backup, tmp_path, damaged)))
    with pytest.raises(CommandError, match="database is not empty"):
        call_command("restore", str(backup))  # the test database has tables
    with pytest.raises(CommandError, match="never overwrites"):
        call_command("backup", str(backup))
    not_a_backup = tmp_path / "x.tar"
    not_a_backup.write_text("hello")
    with pytest.raises(CommandError, match="not a backup"):
        call_command("restore", str(not_a_backup))
