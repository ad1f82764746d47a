"""The reconciler: the backend ends up holding exactly what the database records.

Unrecorded objects go once older than a grace of minutes (not a day), deletions that failed
after a commit are finished at once, stale partial writes go; what any row records stays.
"""

from __future__ import annotations

import dataclasses
import io
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

import consent as consents
import storage
from consent.db import utcnow
from consent.models import AuditEntry
from donation_portal.adapters.keystore import DatabaseKeyStore
from donation_portal.adapters.models import (
    UPLOAD_RECEIVING,
    AccessRequest,
    Donation,
    Release,
    ReleaseItem,
    StoredObject,
    Upload,
    UploadPart,
)
from donation_portal.workflows import accounts, maintenance

GRACE = 600


def _store(app: Flask, session: Session) -> storage.ObjectStore:
    return storage.ObjectStore(
        storage.LocalBackend(app.config["STORAGE_DIR"]),
        storage.KeyRing.load(app.config["KEY_FILE"]),
        DatabaseKeyStore(session),
    )


def _object_path(app: Flask, object_id: str) -> Path:
    return storage.LocalBackend(app.config["STORAGE_DIR"]).path_of(object_id)


def _age(app: Flask, object_id: str, seconds: float) -> None:
    path = _object_path(app, object_id)
    then = time.time() - seconds
    os.utime(path, (then, then))


def _put(app: Flask, session: Session, scope: str, data: bytes = b"x") -> storage.ObjectInfo:
    store = _store(app, session)
    store.ensure_scope(scope)
    return store.put(scope, io.BytesIO(data))


@pytest.fixture
def world(app: Flask, db_session: Session) -> dict[str, Any]:
    """One object of every recorded kind, all old, plus two unrecorded ones (old, young)."""
    template = consents.publish_template(db_session, consents.default_template_spec())
    donor = accounts.create_user(db_session, "d@example.org", "correct horse battery", "donor")
    researcher = accounts.create_user(
        db_session, "r@example.org", "correct horse battery", "researcher"
    )
    consent = consents.sign_consent(
        db_session, subject_ref=f"user:{donor.id}", template=template, modules=["research"],
        typed_name="Ada Donor", sealer=consents.Sealer(b"k" * 32),
    ).consent
    stored = _put(app, db_session, consent.id)
    ethics = _put(app, db_session, "ethics-q1")
    for info in (stored, ethics):
        db_session.add(StoredObject(**dataclasses.asdict(info)))
    db_session.add(Donation(id="d1", donor_id=donor.id, consent_id=consent.id,
                            submission_key="s1"))
    db_session.flush()
    scope = storage.new_quarantine_scope()
    part = _put(app, db_session, scope)
    db_session.add(Upload(id="u1", donor_id=donor.id, consent_id=consent.id, donation_id="d1",
                          scope_id=scope, length=10, offset=1, state=UPLOAD_RECEIVING,
                          expires_at=utcnow() + timedelta(days=1)))
    db_session.flush()
    db_session.add(UploadPart(upload_id="u1", offset=0, **dataclasses.asdict(part)))
    db_session.add(AccessRequest(id="q1", researcher_id=researcher.id, title="t", abstract="a",
                                 use={}, filters={}, ethics_object_id=ethics.object_id))
    old_orphan = _put(app, db_session, consent.id, b"a rolled-back upload")
    young_orphan = _put(app, db_session, consent.id, b"being recorded right now")
    db_session.commit()
    for info in (stored, ethics, part, old_orphan):
        _age(app, info.object_id, 2 * GRACE)
    return {
        "recorded": {stored.object_id, ethics.object_id, part.object_id},
        "old_orphan": old_orphan.object_id,
        "young_orphan": young_orphan.object_id,
        "consent_id": consent.id,
        "researcher_id": researcher.id,
    }


def _listed(app: Flask) -> set[str]:
    return set(storage.LocalBackend(app.config["STORAGE_DIR"]).list())


def _audits(session: Session) -> list[AuditEntry]:
    session.expire_all()
    return list(session.scalars(
        select(AuditEntry).where(AuditEntry.action == "storage.reconciled")
    ))


def test_unrecorded_objects_older_than_the_grace_go_and_recorded_ones_stay(
    app: Flask, db_session: Session, world: dict[str, Any]
) -> None:
    report = maintenance.reconcile_storage(db_session, _store(app, db_session), GRACE)
    assert report.orphans_deleted == [world["old_orphan"]]
    assert report.orphans_within_grace == 1
    assert report.failed == []
    assert _listed(app) == world["recorded"] | {world["young_orphan"]}
    (entry,) = _audits(db_session)
    assert entry.detail["orphans_deleted"] == 1 and entry.detail["grace_seconds"] == GRACE
    assert world["old_orphan"] not in str(entry.detail)  # counts only


def test_a_grace_of_minutes_not_a_day(
    app: Flask, db_session: Session, world: dict[str, Any]
) -> None:
    """With the default ORPHAN_GRACE (10 minutes) an object left 15 minutes ago is gone."""
    _age(app, world["young_orphan"], 15 * 60)
    grace = int(app.config["ORPHAN_GRACE"])
    assert grace <= 15 * 60
    maintenance.reconcile_storage(db_session, _store(app, db_session), grace)
    assert _listed(app) == world["recorded"]


def test_a_dry_run_changes_nothing(
    app: Flask, db_session: Session, world: dict[str, Any]
) -> None:
    before = _listed(app)
    report = maintenance.reconcile_storage(
        db_session, _store(app, db_session), GRACE, dry_run=True
    )
    assert report.orphans_deleted == [world["old_orphan"]]
    assert _listed(app) == before
    assert _audits(db_session) == []


def test_nothing_to_do_is_not_audited(
    app: Flask, db_session: Session, world: dict[str, Any]
) -> None:
    store = _store(app, db_session)
    maintenance.reconcile_storage(db_session, store, GRACE)
    maintenance.reconcile_storage(db_session, store, GRACE)  # the young orphan is still young
    assert len(_audits(db_session)) == 1


def test_a_pending_deletion_of_an_erased_released_file_is_finished_at_once(
    app: Flask, db_session: Session, world: dict[str, Any]
) -> None:
    """Released, then erased: its row is gone, a manifest still names it, so it was recorded
    once and its deletion after the erase failed; no grace is needed to finish it."""
    erased = _put(app, db_session, world["consent_id"], b"erased file")
    db_session.add(Release(id="r1", request_id="q1", researcher_id=world["researcher_id"],
                           expires_at=utcnow() + timedelta(days=1)))
    db_session.flush()
    db_session.add(ReleaseItem(release_id="r1", position=1, donated_file_id=_a_file(db_session,
                               world), consent_id=world["consent_id"],
                               object_id=erased.object_id, size=1, sha256="0" * 64))
    db_session.commit()
    report = maintenance.reconcile_storage(db_session, _store(app, db_session), GRACE)
    assert report.deletions_finished == [erased.object_id]
    assert erased.object_id not in _listed(app)


def _a_file(session: Session, world: dict[str, Any]) -> int:
    from donation_portal.adapters.models import DonatedFile

    row = DonatedFile(donation_id="d1", consent_id=world["consent_id"], position=1, size=1,
                      status="erased")
    session.add(row)
    session.flush()
    return row.id


def test_stale_partial_writes_go_and_live_ones_stay(
    app: Flask, db_session: Session, world: dict[str, Any]
) -> None:
    tmp = Path(app.config["STORAGE_DIR"]) / "tmp"
    stale, live = tmp / "aa.0.part", tmp / "bb.0.part"
    for path in (stale, live):
        path.write_bytes(b"half an object")
    then = time.time() - maintenance.STALE_PARTIAL_SECONDS - 60
    os.utime(stale, (then, then))
    report = maintenance.reconcile_storage(db_session, _store(app, db_session), GRACE)
    assert report.partials_removed == 1
    assert not stale.exists() and live.exists()


def test_a_failing_delete_is_reported_and_the_rest_goes_on(
    app: Flask, db_session: Session, world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    second = _put(app, db_session, world["consent_id"], b"another orphan")
    db_session.commit()
    _age(app, second.object_id, 2 * GRACE)
    real = storage.LocalBackend.delete

    def flaky(self: storage.LocalBackend, object_id: str) -> None:
        if object_id == world["old_orphan"]:
            raise storage.StorageUnavailable("timed out", object_id)
        real(self, object_id)

    monkeypatch.setattr(storage.LocalBackend, "delete", flaky)
    report = maintenance.reconcile_storage(db_session, _store(app, db_session), GRACE)
    assert report.failed == [world["old_orphan"]]
    assert report.orphans_deleted == [second.object_id]
    monkeypatch.undo()
    retry = maintenance.reconcile_storage(db_session, _store(app, db_session), GRACE)
    assert retry.orphans_deleted == [world["old_orphan"]]


def test_the_cli_reconciles_with_a_grace_and_a_dry_run(
    app: Flask, db_session: Session, world: dict[str, Any]
) -> None:
    runner = app.test_cli_runner()
    dry = runner.invoke(args=["storage", "reconcile", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert f"would remove unrecorded object {world['old_orphan']}" in dry.output
    assert world["young_orphan"] not in dry.output
    done = runner.invoke(args=["storage", "reconcile", "--grace", "0"])
    assert done.exit_code == 0, done.output
    assert "removed 2 unrecorded object(s) older than 0 s" in done.output
    assert _listed(app) == world["recorded"]
    verify = runner.invoke(args=["storage", "verify"])
    assert verify.exit_code == 0, verify.output
    assert "orphaned" not in verify.output
