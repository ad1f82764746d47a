"""Withdrawal after release, with two PostgreSQL connections: the row locks serialise them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

import consent as consents
from consent.db import utcnow
from donation_portal.adapters import migrate
from donation_portal.adapters.db import make_engine
from donation_portal.adapters.models import (
    REVIEW_APPROVED,
    AccessRequest,
    DonatedFile,
    Donation,
    Release,
    ReleaseItem,
    StoredObject,
    WithdrawalNotice,
)
from donation_portal.workflows import accounts, releases, withdrawal


def _released_file(session: Session) -> str:
    template = consents.publish_template(session, consents.default_template_spec())
    donor = accounts.create_user(session, "donor@example.org", "correct horse battery", "donor")
    researcher = accounts.create_user(
        session, "r@example.org", "correct horse battery", "researcher"
    )
    consent = consents.sign_consent(
        session,
        subject_ref=f"user:{donor.id}",
        template=template,
        modules=["research"],
        typed_name="Ada Donor",
        sealer=consents.Sealer(b"k" * 32),
    ).consent
    session.add(
        Donation(
            id="d1",
            donor_id=donor.id,
            consent_id=consent.id,
            submission_key="s1",
            review_status=REVIEW_APPROVED,
        )
    )
    session.add(
        StoredObject(
            object_id="o1",
            scope_id=consent.id,
            size=1,
            sha256="0" * 64,
            stored_size=1,
            stored_sha256="0" * 64,
        )
    )
    session.flush()
    donated = DonatedFile(
        donation_id="d1",
        consent_id=consent.id,
        position=1,
        size=1,
        status="accepted",
        object_id="o1",
        sop_instance_uid="2.25.1",
    )
    session.add(donated)
    session.add(
        AccessRequest(
            id="q1",
            researcher_id=researcher.id,
            title="t",
            abstract="a",
            use={"purpose": "health", "publishes": True},  # what the consent permits
            filters={},
        )
    )
    session.flush()
    session.add(
        Release(
            id="r1",
            request_id="q1",
            researcher_id=researcher.id,
            expires_at=utcnow() + timedelta(days=1),
        )
    )
    session.flush()
    session.add(
        ReleaseItem(
            release_id="r1",
            position=1,
            donated_file_id=donated.id,
            consent_id=consent.id,
            object_id="o1",
            size=1,
            sha256="0" * 64,
            sop_instance_uid="2.25.1",
        )
    )
    session.commit()
    return consent.id


def test_a_withdrawal_and_a_download_wait_for_each_other(
    empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not empty_database_url.startswith("postgresql"):
        pytest.skip("row locks are a PostgreSQL matter; SQLite serialises whole transactions")
    migrate.upgrade(empty_database_url)
    engine = make_engine(empty_database_url)
    # every connection of this one gives up on a lock after 300 ms instead of waiting
    impatient = create_engine(empty_database_url, connect_args={"options": "-c lock_timeout=300"})
    try:
        with Session(engine) as setup:
            consent_id = _released_file(setup)
        with Session(engine) as download, Session(impatient) as withdraw:
            release = download.get(Release, "r1")
            assert len(releases.downloadable(download, release)) == 1  # holds the row lock
            with pytest.raises(OperationalError):
                withdrawal.withdraw(withdraw, consent_id, None)  # type: ignore[arg-type]
            download.commit()

            # the withdrawal commits itself: look from inside its transaction, once it holds
            # the locks, whether a download being prepared has to wait for it
            waited: list[bool] = []
            record = withdrawal.record_withdrawal_notices

            def record_then_try_a_download(session: Session, *args: object) -> int:
                made = record(session, *args)  # type: ignore[arg-type]
                with Session(impatient) as other, pytest.raises(OperationalError):
                    releases.downloadable(other, other.get(Release, "r1"))
                waited.append(True)
                return made

            monkeypatch.setattr(withdrawal, "record_withdrawal_notices", record_then_try_a_download)
            withdrawal.withdraw(withdraw, consent_id, None)  # type: ignore[arg-type]
            assert waited == [True]

            release = download.get(Release, "r1")
            assert releases.downloadable(download, release) == []
            notice = download.query(WithdrawalNotice).one()
            assert notice.sop_instance_uids == ["2.25.1"]
    finally:
        impatient.dispose()
        engine.dispose()
