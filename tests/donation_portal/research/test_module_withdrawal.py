"""Withdrawing one module: releases whose use it covered lose the files and get a notice."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from donation_portal.adapters.models import AccessRequest, Donation, Release, User, WithdrawalNotice

from ..conftest import Browser
from .test_end_to_end import CT, MR, _keygen, _login


def _donor(app: Flask, email: str, content: bytes, modules: tuple[str, ...]) -> Browser:
    donor = Browser(app.test_client())
    assert donor.register(email).status_code == 303
    assert donor.sign_consent(modules).status_code == 200
    assert donor.upload([content]).status_code in (200, 303)
    return donor


def _researcher(app: Flask, make_user, home: Path, name: str) -> Browser:  # type: ignore[no-untyped-def]
    browser = _login(app, make_user, f"{name}@example.org", "researcher")
    _, public = _keygen(home, name)
    profile = {"affiliation": f"{name} lab", "public_key": public.read_text()}
    assert browser.submit("/researcher/profile", profile).status_code == 303
    form = {"title": f"{name} study", "abstract": "A study of imaging data.",
            "purpose": "general" if name == "methods" else "health", "publishes": "yes",
            "action": "submit"}
    assert browser.submit("/researcher/requests/new", form).status_code == 303
    return browser


def test_a_module_withdrawal_ends_only_the_releases_whose_use_it_covered(
    app: Flask, make_user, db_session: Session, tmp_path: Path, published: None  # type: ignore[no-untyped-def]
) -> None:
    both = _donor(app, "both@example.org", CT, ("research", "general_research"))
    _donor(app, "health@example.org", MR, ("research",))
    stewards = [_login(app, make_user, f"s{n}@example.org", "steward") for n in (1, 2)]
    for donation in db_session.scalars(select(Donation)).all():
        action = f"/steward/donations/{donation.id}/decision"
        assert stewards[0].submit("/steward/donations", {"decision": "approve"},
                                  action=action).status_code == 303
    researchers = {name: _researcher(app, make_user, tmp_path, name)
                   for name in ("methods", "clinical")}
    expires = (date.today() + timedelta(days=30)).isoformat()
    for access in db_session.scalars(select(AccessRequest)).all():
        action = f"/steward/requests/{access.id}/decision"
        for steward in stewards:
            answer = steward.submit("/steward/requests/", {"decision": "approve",
                                                           "expires": expires}, action=action)
            assert answer.status_code == 303
    release = {}
    for name in researchers:
        user = db_session.scalars(select(User).where(User.email == f"{name}@example.org")).one()
        release[name] = db_session.scalars(
            select(Release).where(Release.researcher_id == user.id)).one()
    assert [i.modality for i in release["methods"].items] == ["CT"]  # only via the GRU module
    assert sorted(i.modality for i in release["clinical"].items) == ["CT", "MR"]
    ct_position = next(i.position for i in release["clinical"].items if i.modality == "CT")

    withdrawn = both.submit("/consent/withdraw", {"confirm": "yes", "scope": "modules",
                                                  "modules": "general_research"})
    assert withdrawn.status_code in (200, 303)

    methods_url = f"/researcher/releases/{release['methods'].id}/files/1"
    assert researchers["methods"].client.get(methods_url).status_code == 410
    clinical_url = f"/researcher/releases/{release['clinical'].id}/files/{ct_position}"
    assert researchers["clinical"].client.get(clinical_url).status_code == 200  # HMB still held
    db_session.expire_all()
    notices = db_session.scalars(select(WithdrawalNotice)).all()
    assert [(n.release_id, n.sop_instance_uids) for n in notices] == [
        (release["methods"].id, [release["methods"].items[0].sop_instance_uid])
    ]
    page = researchers["methods"].get("/researcher/")
    assert "Withdrawal notice" in page and release["methods"].items[0].sop_instance_uid in page
    assert "Withdrawal notice" not in researchers["clinical"].get("/researcher/")
    assert release["methods"].id in stewards[0].get("/steward/withdrawals")
