"""The number of files a withdrawal touched reads the same for the donor, the steward and the
researcher, whatever else the donor sent; and an image sent twice is stored once (not yet
across a renewed consent: see the xfail at the end)."""

from __future__ import annotations

import re
from datetime import date, timedelta
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

import consent as consents
from donation_portal.adapters.models import (
    AccessRequest,
    DonatedFile,
    Donation,
    Release,
    StoredObject,
)

from .conftest import Browser
from .research.test_module_withdrawal import _researcher
from .test_steward import CT, SCREEN_CAPTURE, another_instance

NOT_DICOM = b"%PDF-1.4 not an image"
STEWARD_COUNT = re.compile(r'<td data-label="Files affected">(.*?)</td>', re.S)


def _steward_counts(page: str) -> list[str]:
    """The steward's "Files affected" cells, as read: without tags, spaces collapsed."""
    return [" ".join(re.sub(r"<[^>]+>", "", cell).split()) for cell in STEWARD_COUNT.findall(page)]


def _statuses(db_session: Session) -> list[str]:
    db_session.expire_all()
    return sorted(db_session.scalars(select(DonatedFile.status)).all())


def _stored(db_session: Session) -> int:
    return db_session.scalar(select(func.count()).select_from(StoredObject)) or 0


def _release_of_accepted_files(
    app: Flask,
    make_user,  # type: ignore[no-untyped-def]
    db_session: Session,
    home: Path,
) -> tuple[Browser, Browser, Release]:
    """Two stewards approve the donations and a researcher's request; the steward, the
    researcher and the release."""
    stewards = []
    for n in (1, 2):
        make_user(f"s{n}@example.org", "steward")
        steward = Browser(app.test_client())
        assert steward.login(f"s{n}@example.org").status_code == 303
        stewards.append(steward)
    for donation in db_session.scalars(select(Donation)).all():
        action = f"/steward/donations/{donation.id}/decision"
        form = {"decision": "approve"}
        assert stewards[0].submit("/steward/donations", form, action=action).status_code == 303
    researcher = _researcher(app, make_user, home, "clinical")
    expires = (date.today() + timedelta(days=30)).isoformat()
    access = db_session.scalars(select(AccessRequest)).one()
    for steward in stewards:
        form = {"decision": "approve", "expires": expires}
        action = f"/steward/requests/{access.id}/decision"
        assert steward.submit("/steward/requests/", form, action=action).status_code == 303
    return stewards[0], researcher, db_session.scalars(select(Release)).one()


def test_an_erase_reads_the_same_for_donor_steward_and_researcher(
    app: Flask,
    donor: Browser,
    make_user,  # type: ignore[no-untyped-def]
    db_session: Session,
    tmp_path: Path,
) -> None:
    second = another_instance(CT)
    donor.upload([CT, second, CT, NOT_DICOM, SCREEN_CAPTURE])
    assert _statuses(db_session) == [
        "accepted",
        "accepted",
        "duplicate",
        "needs_review",
        "rejected",
    ]
    assert _stored(db_session) == 3  # the duplicate and the rejected file were never stored
    steward, researcher, release = _release_of_accepted_files(app, make_user, db_session, tmp_path)
    released = sorted(item.sop_instance_uid for item in release.items)
    assert len(released) == 2  # the held file is not released

    done = donor.submit("/consent/withdraw", {"confirm": "yes", "scope": "all", "mode": "erase"})
    assert done.status_code == 200, done.get_data(as_text=True)[-1500:]
    assert "the key to your 3 stored files has been" in done.get_data(as_text=True)
    assert _stored(db_session) == 0
    assert _statuses(db_session) == ["duplicate", "erased", "erased", "erased", "rejected"]

    assert _steward_counts(steward.get("/steward/withdrawals")) == ["3 files erased"]
    notice = researcher.get("/researcher/")
    listed = sorted(re.findall(r"<li><code>([^<]+)</code></li>", notice))
    assert listed == released  # the files of this release: a different number, named as such


def test_stop_future_use_counts_the_files_kept_the_same_for_donor_and_steward(
    app: Flask,
    donor: Browser,
    make_user,  # type: ignore[no-untyped-def]
    db_session: Session,
) -> None:
    donor.upload([CT, CT, NOT_DICOM])
    make_user("steward@example.org", "steward")
    steward = Browser(app.test_client())
    assert steward.login("steward@example.org").status_code == 303
    done = donor.submit("/consent/withdraw", {"confirm": "yes", "scope": "all", "mode": "stop_use"})
    assert "Your 1 stored file is kept encrypted" in done.get_data(as_text=True)
    assert _steward_counts(steward.get("/steward/withdrawals")) == ["1 file kept"]


def test_sending_the_same_series_again_records_duplicates_and_stores_nothing_twice(
    donor: Browser, db_session: Session
) -> None:
    series = [CT, another_instance(CT), another_instance(CT)]
    donor.upload(series)
    assert _stored(db_session) == 3
    donor.upload(series)
    assert _stored(db_session) == 3
    assert _statuses(db_session) == ["accepted"] * 3 + ["duplicate"] * 3
    donation = db_session.scalars(select(Donation).order_by(Donation.created_at.desc())).first()
    page = donor.get(f"/donations/{donation.id}")
    assert page.count("status-duplicate") == 3


def test_a_renewed_consent_and_the_one_it_superseded_are_counted_as_one_withdrawal(
    app: Flask,
    donor: Browser,
    make_user,  # type: ignore[no-untyped-def]
    db_session: Session,
) -> None:
    donor.upload([CT, NOT_DICOM])
    spec = consents.default_template_spec()
    consents.publish_template(db_session, {**spec, "version": "2", "title": "Revised text"})
    db_session.commit()
    assert donor.sign_consent().status_code == 200
    donor.upload([another_instance(CT), NOT_DICOM])
    make_user("steward@example.org", "steward")
    steward = Browser(app.test_client())
    assert steward.login("steward@example.org").status_code == 303

    done = donor.submit("/consent/withdraw", {"confirm": "yes", "scope": "all", "mode": "erase"})
    assert "the key to your 2 stored files has been" in done.get_data(as_text=True)
    renewed = db_session.scalars(select(Donation).order_by(Donation.created_at.desc())).first()
    cells = _steward_counts(steward.get("/steward/withdrawals"))
    assert sorted(cells) == ["2 files erased", f"counted with {renewed.consent_id[:10]}…"]


@pytest.mark.xfail(
    strict=True,
    reason="the fingerprint is taken of the de-identified UID, which a renewed consent's new "
    "pseudonym changes: the same image is stored again under the renewed consent",
)
def test_the_same_image_sent_again_after_renewing_the_consent_is_a_duplicate(
    donor: Browser, db_session: Session
) -> None:
    donor.upload([CT])
    spec = consents.default_template_spec()
    consents.publish_template(db_session, {**spec, "version": "2", "title": "Revised text"})
    db_session.commit()
    assert donor.sign_consent().status_code == 200
    donor.upload([CT])
    assert _statuses(db_session) == ["accepted", "duplicate"]
