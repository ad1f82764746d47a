"""A released object that fails authentication is never presented as a complete download."""

from __future__ import annotations

import io
import tarfile
from datetime import date, timedelta

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from donation_portal.adapters.models import AccessRequest, Release, StoredObject
from storage import IntegrityError
from storage.backend import LocalBackend

from ..conftest import Browser
from .test_cohort_filters import FORM, researcher  # noqa: F401 - the fixture
from .test_end_to_end import _login


@pytest.fixture
def release(app: Flask, make_user, db_session: Session, researcher: Browser) -> Release:  # type: ignore[no-untyped-def]  # noqa: F811
    form = {**FORM, "modalities": "CT", "action": "submit"}
    assert researcher.submit("/researcher/requests/new", form).status_code == 303
    access = db_session.scalars(select(AccessRequest)).one()
    expires = (date.today() + timedelta(days=30)).isoformat()
    for n in (1, 2):
        steward = _login(app, make_user, f"approver{n}@example.org", "steward")
        answer = steward.submit("/steward/requests/", {"decision": "approve", "expires": expires},
                                action=f"/steward/requests/{access.id}/decision")
        assert answer.status_code == 303
    return db_session.scalars(select(Release)).one()


def _flip(app: Flask, db_session: Session, object_id: str, offset_from_end: int) -> None:
    stored = db_session.get(StoredObject, object_id)
    path = LocalBackend(app.config["STORAGE_DIR"]).path_of(object_id)
    data = bytearray(path.read_bytes())
    assert len(data) == stored.stored_size
    data[len(data) - offset_from_end] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_tampered_data_segment_cuts_the_download_short(
    app: Flask, db_session: Session, researcher: Browser, release: Release  # noqa: F811
) -> None:
    url = f"/researcher/releases/{release.id}/files/1"
    intact = researcher.client.get(url)
    assert len(intact.get_data()) == int(intact.headers["Content-Length"])
    _flip(app, db_session, release.items[0].object_id, 100)
    response = researcher.client.get(url)
    assert response.status_code == 200  # the header went out before the data was read
    promised = int(response.headers["Content-Length"])
    sent = bytearray()
    with pytest.raises(IntegrityError):
        for chunk in response.response:
            sent += chunk
    assert len(sent) < promised  # a client sees an incomplete transfer, not a complete file


def test_a_tampered_header_is_a_clear_error_before_anything_is_sent(
    app: Flask, db_session: Session, researcher: Browser, release: Release  # noqa: F811
) -> None:
    stored = db_session.get(StoredObject, release.items[0].object_id)
    header_length = stored.stored_size - (stored.size + 28 * -(-stored.size // 65536))
    _flip(app, db_session, stored.object_id, stored.stored_size - header_length + 20)
    response = researcher.client.get(f"/researcher/releases/{release.id}/files/1")
    assert response.status_code == 500
    assert "failed its integrity check" in response.get_data(as_text=True)


def test_a_tampered_member_leaves_the_tar_without_its_end(
    app: Flask, db_session: Session, researcher: Browser, release: Release  # noqa: F811
) -> None:
    _flip(app, db_session, release.items[0].object_id, 100)
    response = researcher.client.get(f"/researcher/releases/{release.id}/release.tar")
    sent = bytearray()
    with pytest.raises(IntegrityError):
        for chunk in response.response:
            sent += chunk
    with pytest.raises(tarfile.ReadError), tarfile.open(fileobj=io.BytesIO(bytes(sent))) as tar:
        for member in tar.getmembers():
            tar.extractfile(member).read()


def test_a_missing_object_is_a_clear_error(
    app: Flask, researcher: Browser, release: Release  # noqa: F811
) -> None:
    LocalBackend(app.config["STORAGE_DIR"]).path_of(release.items[0].object_id).unlink()
    response = researcher.client.get(f"/researcher/releases/{release.id}/files/1")
    assert response.status_code == 500
    assert "failed its integrity check" in response.get_data(as_text=True)
