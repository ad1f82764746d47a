"""A withdrawal committed while a release tar streams keeps the members not yet sent out."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from consent import default_template_spec, publish_template
from donation_portal import create_app
from donation_portal.adapters import migrate
from donation_portal.adapters.db import make_engine
from donation_portal.adapters.models import AccessRequest, Donation, Release
from donation_portal.workflows import accounts, withdrawal

from ..conftest import PASSWORD, Browser, enrol_totp
from .test_cohort_filters import FORM
from .test_end_to_end import CT, MR, _donate, _keygen


@pytest.fixture
def committed_app(empty_database_url: str, instance_path: Path) -> Iterator[Flask]:
    """An app on a real database whose transactions commit (no rolled-back test session),
    so that another connection can withdraw while a response streams."""
    migrate.upgrade(empty_database_url)
    app = create_app({"ENV": "test", "INSTANCE_PATH": str(instance_path),
                      "DATABASE_URL": empty_database_url})
    yield app
    app.extensions["portal_engine"].dispose()


def _user(app: Flask, engine, email: str, role: str) -> Browser:  # type: ignore[no-untyped-def]
    with Session(engine) as session:
        enrol_totp(app, session, accounts.create_user(session, email, PASSWORD, role))
    browser = Browser(app.test_client())
    assert browser.login(email, PASSWORD).status_code == 303
    return browser


def test_a_member_withdrawn_mid_stream_is_left_out(committed_app: Flask, empty_database_url: str,
                                                   tmp_path: Path) -> None:
    app, engine = committed_app, make_engine(empty_database_url)
    try:
        with Session(engine) as session:
            publish_template(session, default_template_spec())
            session.commit()
        _donate(app, "ct@example.org", CT)
        _donate(app, "mr@example.org", MR)
        stewards = [_user(app, engine, f"s{n}@example.org", "steward") for n in (1, 2)]
        with Session(engine) as session:
            donations = list(session.scalars(select(Donation.id)))
        for donation in donations:
            assert stewards[0].submit("/steward/donations", {"decision": "approve"},
                                      action=f"/steward/donations/{donation}/decision"
                                      ).status_code == 303
        researcher = _user(app, engine, "r@example.org", "researcher")
        _, public = _keygen(tmp_path, "r")
        profile = {"affiliation": "Lab", "public_key": public.read_text()}
        assert researcher.submit("/researcher/profile", profile).status_code == 303
        assert researcher.submit("/researcher/requests/new",
                                 {**FORM, "action": "submit"}).status_code == 303
        with Session(engine) as session:
            access = session.scalars(select(AccessRequest.id)).one()
        expires = (date.today() + timedelta(days=30)).isoformat()
        for steward in stewards:
            assert steward.submit("/steward/requests/", {"decision": "approve",
                                                         "expires": expires},
                                  action=f"/steward/requests/{access}/decision"
                                  ).status_code == 303
        with Session(engine) as session:
            release = session.scalars(select(Release)).one()
            release_id, second = release.id, release.items[1].consent_id

        response = researcher.client.get(f"/researcher/releases/{release_id}/release.tar")
        assert response.status_code == 200
        stream = iter(response.response)
        sent = bytearray(next(stream))  # the first member has started
        with Session(engine) as session:  # meanwhile, on another connection, a donor withdraws
            withdrawal.withdraw(session, second, None)  # type: ignore[arg-type]
            session.commit()
        for chunk in stream:
            sent += chunk
        with tarfile.open(fileobj=io.BytesIO(bytes(sent))) as tar:
            names = tar.getnames()
        assert [name[:6] for name in names] == ["00001-"]
    finally:
        engine.dispose()
