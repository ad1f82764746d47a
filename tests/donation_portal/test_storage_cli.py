"""`keys status|rotate|retire` and `storage verify`, over objects stored the portal's way."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

import storage
from donation_portal.keystore import DatabaseKeyStore
from donation_portal.models import ScopeKey, StoredObject, stored_info


def _store(app: Flask, session: Session) -> storage.ObjectStore:
    return storage.ObjectStore(
        storage.LocalBackend(app.config["STORAGE_DIR"]),
        storage.KeyRing.load(app.config["KEY_FILE"]),
        DatabaseKeyStore(session),
    )


@pytest.fixture
def stored(app: Flask, db_session: Session) -> list[tuple[StoredObject, bytes]]:
    """Three objects in two scopes, recorded like ingest records them."""
    store = _store(app, db_session)
    result = []
    for scope, content in (
        ("consent-a", b"alpha" * 40_000),
        ("consent-a", b"beta"),
        ("consent-b", b"g"),
    ):
        store.ensure_scope(scope)
        info = store.put(scope, io.BytesIO(content))
        row = StoredObject(**dataclasses.asdict(info))
        db_session.add(row)
        result.append((row, content))
    db_session.commit()
    return result


def _object_path(app: Flask, object_id: str) -> Path:
    matches = [p for p in Path(app.config["STORAGE_DIR"]).rglob(f"{object_id}*") if p.is_file()]
    assert len(matches) == 1
    return matches[0]


def test_status_counts_keys_per_version(app: Flask, stored: list) -> None:
    result = app.test_cli_runner().invoke(args=["keys", "status"])
    assert result.exit_code == 0, result.output
    assert "KEK version 1 (current): 2 wrapped key(s)" in result.output


def test_rotation_rewraps_every_key_and_leaves_data_files_alone(
    app: Flask, db_session: Session, stored: list
) -> None:
    before = {row.object_id: _object_path(app, row.object_id).read_bytes() for row, _ in stored}
    runner = app.test_cli_runner()
    rotated = runner.invoke(args=["keys", "rotate"])
    assert rotated.exit_code == 0, rotated.output
    assert "KEK version 2 is current; re-wrapped 2 key(s)" in rotated.output
    assert {k.kek_version for k in db_session.scalars(select(ScopeKey))} == {2}
    retired = runner.invoke(args=["keys", "retire", "1"])
    assert retired.exit_code == 0, retired.output
    assert storage.KeyRing.load(app.config["KEY_FILE"]).versions() == [2]
    for row, content in stored:
        assert _object_path(app, row.object_id).read_bytes() == before[row.object_id]
        assert _store(app, db_session).read_bytes(stored_info(row)) == content
    status = runner.invoke(args=["keys", "status"])
    assert "KEK version 2 (current): 2 wrapped key(s)" in status.output
    assert "version 1" not in status.output


def test_a_version_in_use_cannot_be_retired(app: Flask, stored: list) -> None:
    result = app.test_cli_runner().invoke(args=["keys", "retire", "1"])
    assert result.exit_code != 0
    assert storage.KeyRing.load(app.config["KEY_FILE"]).versions() == [1]


def test_verify_passes_on_intact_storage(app: Flask, stored: list) -> None:
    result = app.test_cli_runner().invoke(args=["storage", "verify"])
    assert result.exit_code == 0, result.output
    assert "checked 3 object(s)" in result.output


def test_verify_names_corrupted_missing_and_orphaned_objects(app: Flask, stored: list) -> None:
    (tampered, _), (missing, _), _ = stored
    path = _object_path(app, tampered.object_id)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    _object_path(app, missing.object_id).unlink()
    orphan = storage.LocalBackend(app.config["STORAGE_DIR"])
    orphan_id = storage.new_object_id()
    orphan.put(orphan_id, [b"left behind"])
    result = app.test_cli_runner().invoke(args=["storage", "verify"])
    assert result.exit_code == 1
    assert f"corrupted: {tampered.object_id}" in result.output
    assert f"missing: {missing.object_id}" in result.output
    assert f"orphaned: {orphan_id}" in result.output


def test_key_commands_refuse_a_key_ring_from_the_environment(app: Flask, app_config: dict) -> None:
    ring = json.loads(Path(app.config["KEY_FILE"]).read_text())
    from donation_portal import create_app

    env_app = create_app({**app_config, "KEK": json.dumps(ring)})
    result = env_app.test_cli_runner().invoke(args=["keys", "rotate"])
    assert result.exit_code != 0
    assert "PORTAL_KEK" in result.output
