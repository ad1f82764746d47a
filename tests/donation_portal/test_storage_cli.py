"""`keys status|rotate|retire` and `storage verify`, over objects stored the portal's way."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import time
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

import storage
from consent.models import AuditEntry
from donation_portal.adapters import services
from donation_portal.adapters.keystore import DatabaseKeyStore
from donation_portal.adapters.models import ScopeKey, StoredObject, stored_info


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


def test_verify_tells_harmless_orphans_from_damage(app: Flask, stored: list) -> None:
    """Unrecorded objects are the reconciler's business, not damage: exit 0."""
    orphan_id = storage.new_object_id()
    storage.LocalBackend(app.config["STORAGE_DIR"]).put(orphan_id, [b"left behind"])
    result = app.test_cli_runner().invoke(args=["storage", "verify"])
    assert result.exit_code == 0, result.output
    assert f"orphaned: {orphan_id}" in result.output
    assert "harmless" in result.output and "reconcile" in result.output
    assert "DAMAGE" not in result.output


def test_key_commands_refuse_a_key_ring_from_the_environment(app: Flask, app_config: dict) -> None:
    ring = json.loads(Path(app.config["KEY_FILE"]).read_text())
    from donation_portal import create_app

    env_app = create_app({**app_config, "KEK": json.dumps(ring)})
    result = env_app.test_cli_runner().invoke(args=["keys", "rotate"])
    assert result.exit_code != 0
    assert "PORTAL_KEK" in result.output


DAY = 86_400


def _age(app: Flask, object_id: str, seconds: float) -> None:
    path = _object_path(app, object_id)
    then = path.stat().st_mtime - seconds
    os.utime(path, (then, then))


@pytest.fixture
def abandoned(app: Flask, db_session: Session) -> tuple[str, str]:
    """A raw upload whose request died two days ago: its key was committed, nothing recorded."""
    store = _store(app, db_session)
    scope = storage.new_quarantine_scope(now=time.time() - 2 * DAY)
    store.ensure_scope(scope)
    info = store.put(scope, io.BytesIO(b"DICM raw upload bytes"))
    db_session.commit()
    _age(app, info.object_id, 2 * DAY)
    return scope, info.object_id


def test_sweep_destroys_abandoned_quarantine_and_keeps_recorded_objects(
    app: Flask, db_session: Session, stored: list, abandoned: tuple[str, str]
) -> None:
    scope, object_id = abandoned
    fresh_scope = storage.new_quarantine_scope()
    _store(app, db_session).ensure_scope(fresh_scope)
    db_session.commit()

    result = app.test_cli_runner().invoke(args=["storage", "sweep"])

    assert result.exit_code == 0, result.output
    assert f"destroyed quarantine key {scope}" in result.output
    assert f"destroyed unrecorded object {object_id}" in result.output
    db_session.expire_all()
    assert db_session.get(ScopeKey, scope) is None
    assert db_session.get(ScopeKey, fresh_scope) is not None
    assert not list(Path(app.config["STORAGE_DIR"]).rglob(f"{object_id}*"))
    for row, content in stored:
        assert _store(app, db_session).read_bytes(stored_info(row)) == content
    audit = db_session.scalars(select(AuditEntry).where(AuditEntry.action == "storage.swept"))
    assert [entry.detail["shredded_scopes"] for entry in audit] == [1]
    assert app.test_cli_runner().invoke(args=["storage", "verify"]).exit_code == 0


def test_sweep_dry_run_changes_nothing(
    app: Flask, db_session: Session, abandoned: tuple[str, str]
) -> None:
    scope, object_id = abandoned
    result = app.test_cli_runner().invoke(args=["storage", "sweep", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert f"would destroy quarantine key {scope}" in result.output
    assert f"would destroy unrecorded object {object_id}" in result.output
    db_session.expire_all()
    assert db_session.get(ScopeKey, scope) is not None
    assert _object_path(app, object_id).is_file()


def test_sweep_leaves_what_is_younger_than_the_limit(
    app: Flask, db_session: Session, abandoned: tuple[str, str]
) -> None:
    scope, object_id = abandoned
    result = app.test_cli_runner().invoke(
        args=["storage", "sweep", "--older-than", str(3 * DAY)]
    )
    assert result.exit_code == 0, result.output
    assert "destroyed 0 quarantine key(s), 0 unrecorded object(s)" in result.output
    db_session.expire_all()
    assert db_session.get(ScopeKey, scope) is not None
    assert _object_path(app, object_id).is_file()


def test_sweep_keeps_the_quarantine_key_of_an_upload_still_in_progress(
    app: Flask, db_session: Session, abandoned: tuple[str, str]
) -> None:
    """An upload queued through a day-long worker outage must not lose its key."""
    import consent as consents
    from consent.db import utcnow
    from donation_portal.adapters.models import Donation, Upload
    from donation_portal.workflows import accounts

    scope, _ = abandoned
    donor = accounts.create_user(db_session, "d@example.org", "correct horse battery", "donor")
    template = consents.publish_template(db_session, consents.default_template_spec())
    consent = consents.sign_consent(
        db_session, subject_ref=f"user:{donor.id}", template=template, modules=["research"],
        typed_name="Ada Donor", sealer=consents.Sealer(b"k" * 32),
    ).consent
    db_session.add(Donation(id="d1", donor_id=donor.id, consent_id=consent.id,
                            submission_key="s1"))
    db_session.flush()
    db_session.add(Upload(id="u1", donor_id=donor.id, consent_id=consent.id, donation_id="d1",
                          scope_id=scope, length=10, offset=10, state="queued",
                          expires_at=utcnow()))
    db_session.commit()
    result = app.test_cli_runner().invoke(args=["storage", "sweep"])
    assert result.exit_code == 0, result.output
    assert "destroyed 0 quarantine key(s)" in result.output
    db_session.expire_all()
    assert db_session.get(ScopeKey, scope) is not None


def test_a_running_app_follows_a_rotation_made_by_another_process(
    app: Flask, db_session: Session, stored: list
) -> None:
    """`keys rotate` runs in its own process: the web app's cached ring must not go stale."""
    with app.app_context():
        assert services.keyring().versions() == [1]
    ring = storage.KeyRing.load(app.config["KEY_FILE"])
    storage.rotate_keys(ring, DatabaseKeyStore(db_session), save_to=app.config["KEY_FILE"])
    db_session.commit()
    with app.app_context():
        assert services.keyring().versions() == [1, 2]
        store = services.object_store(db_session)
        for row, content in stored:
            assert store.read_bytes(stored_info(row)) == content


def test_replacing_a_missing_key_is_a_storage_error(db_session: Session) -> None:
    key = storage.WrappedKey("no-such-scope", b"p" * 32, b"w" * 60, 1)
    with pytest.raises(storage.KeyUnavailable):
        DatabaseKeyStore(db_session).replace(key)
