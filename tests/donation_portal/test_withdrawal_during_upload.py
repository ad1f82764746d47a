"""A withdrawal committed while an ingest job is de-identifying the file wins over the job."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

import anonymize
import consent as consents
from donation_portal.adapters.models import DonatedFile, StoredObject, Upload
from donation_portal.workflows import ingest

from .conftest import Browser
from .phi import real_file

CT = real_file("CT_small.dcm").content


def test_a_job_finishing_after_a_withdrawal_stores_nothing(
    app: Flask, donor: Browser, db_session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = anonymize.deidentify

    def withdraw_then_deidentify(*args, **kwargs):  # type: ignore[no-untyped-def]
        with app.extensions["portal_sessionmaker"]() as other:
            record = other.scalars(select(consents.Consent)).one()
            consents.withdraw_consent(other, record.id, mode=consents.STOP_USE)
            other.commit()
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest.anonymize, "deidentify", withdraw_then_deidentify)
    reply = donor.upload([CT])
    assert reply.status_code == 303
    db_session.expire_all()
    (row,) = db_session.scalars(select(DonatedFile)).all()
    assert row.status == "cancelled" and row.object_id is None
    assert db_session.scalars(select(Upload.state)).all() == ["cancelled"]
    assert db_session.scalars(select(StoredObject)).all() == []
    assert not list(Path(app.config["STORAGE_DIR"]).rglob("*.c4gh"))
