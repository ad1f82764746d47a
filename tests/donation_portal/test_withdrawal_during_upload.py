"""A withdrawal committed while an upload is being processed wins over the upload."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

import consent as consents
from donation_portal.adapters import services
from donation_portal.adapters.models import Donation, StoredObject
from donation_portal.adapters.request_session import get_session
from donation_portal.workflows.ingest import ingest_upload

from .conftest import Browser
from .phi import real_file

CT = real_file("CT_small.dcm").content


class WithdrawsWhenRead(io.BytesIO):
    """A file whose first read stands for 'the donor withdrew while this was processed'."""

    def __init__(self, data: bytes, withdraw: object) -> None:
        super().__init__(data)
        self._withdraw = withdraw

    def read(self, size: int | None = -1) -> bytes:
        if self._withdraw is not None:
            withdraw, self._withdraw = self._withdraw, None
            withdraw()  # type: ignore[operator]
        return super().read(size)


def test_an_upload_finishing_after_a_withdrawal_is_refused_and_stores_nothing(
    app: Flask, donor: Browser
) -> None:
    with app.test_request_context():
        session = get_session()
        consent = session.scalars(select(consents.Consent)).one()
        donor_id = consent.subject_ref.removeprefix("user:")

        def withdraw() -> None:
            consents.withdraw_consent(session, consent.id, mode=consents.STOP_USE)

        with pytest.raises(consents.NotActive):
            ingest_upload(
                session,
                donor_id=int(donor_id),
                consent=consent,
                submission_key="a" * 32,
                files=[WithdrawsWhenRead(CT, withdraw), io.BytesIO(CT)],
                store=services.object_store(session),
                deid_key=services.deid_key(),
                max_file_bytes=int(app.config["MAX_FILE_BYTES"]),
            )
        session.flush()
        assert not [p for p in Path(app.config["STORAGE_DIR"]).rglob("*") if p.is_file()]
        session.rollback()
        assert session.scalars(select(Donation)).all() == []
        assert session.scalars(select(StoredObject)).all() == []
