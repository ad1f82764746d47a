"""Request limits: a small body everywhere but where files arrive, bounded forms and IDs.

Each limit is a clear 4xx, decided before a body is read whole, never a 500.
"""

from __future__ import annotations

import io
import re

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from .conftest import PASSWORD, Browser
from .research.test_cohort_filters import FORM, researcher  # noqa: F401 - the fixture
from .test_tus import Tus

MIB = 2**20
URLENCODED = "application/x-www-form-urlencoded"
HUGE = "99999999999999999999999"
JUST_TOO_BIG = str(2**31)  # one more than an INTEGER column holds (PostgreSQL: int4)


class Generated(io.RawIOBase):
    """A request body of ``size`` bytes, made as it is read; ``read_so_far`` counts them."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.left = size
        self.read_so_far = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        count = min(len(buffer), self.left)
        buffer[:count] = b"a" * count
        self.left -= count
        self.read_so_far += count
        return count


def _send(
    client: FlaskClient, path: str, body: Generated, content_type: str, length: int | None,
    headers: dict[str, str] | None = None,
) -> TestResponse:
    """POST ``body`` as a server hands it over: with its length, or chunked (no length, the
    stream ends where the body does, as gunicorn marks it)."""
    environ: dict[str, object] = {"wsgi.input": body}
    headers = dict(headers or {})
    if length is None:
        environ["wsgi.input_terminated"] = True
        headers["Transfer-Encoding"] = "chunked"
    else:
        environ["CONTENT_LENGTH"] = str(length)
    return client.post(
        path, content_type=content_type, headers=headers, environ_overrides=environ
    )


def _logged_in(app: Flask, make_user, email: str, role: str) -> Browser:  # type: ignore[no-untyped-def]
    make_user(email, role)
    browser = Browser(app.test_client())
    assert browser.login(email, PASSWORD).status_code == 303
    return browser


def _bearer(reader: Browser) -> dict[str, str]:
    """An API token (the API takes no login session) that may submit access requests."""
    made = reader.submit("/researcher/tokens", {"name": "t", "scopes": ["requests:create"]})
    token = re.search(r'class="token">([^<]+)<', made.get_data(as_text=True)).group(1)
    return {"Authorization": f"Bearer {token}"}


def test_a_32_mib_login_is_refused_without_being_read(client: FlaskClient) -> None:
    body = Generated(32 * MIB)
    response = _send(client, "/login", body, URLENCODED, 32 * MIB)
    assert response.status_code == 413
    assert "too large" in response.get_data(as_text=True)
    assert body.read_so_far == 0


def test_a_body_without_a_length_is_cut_off_at_the_limit(client: FlaskClient) -> None:
    body = Generated(32 * MIB)
    response = _send(client, "/login", body, URLENCODED, None)
    assert response.status_code == 413
    assert body.read_so_far <= 2 * MIB


def test_a_urlencoded_form_with_too_many_fields_is_refused(client: FlaskClient) -> None:
    fields = "&".join(f"f{n}=1" for n in range(1001))  # a few kilobytes
    response = client.post("/login", data=fields, content_type=URLENCODED)
    assert response.status_code == 413


def test_the_upload_form_takes_files_not_megabytes_of_urlencoded_text(donor: Browser) -> None:
    """Its body may be 2 GiB, but Werkzeug would read a urlencoded one whole into memory."""
    body = Generated(MIB)
    response = _send(donor.client, "/donations/new", body, URLENCODED, MIB)
    assert response.status_code == 413
    assert body.read_so_far == 0


def test_uploads_are_still_accepted_above_the_body_limit(donor: Browser) -> None:
    large = b"\0" * (2 * MIB)  # not an image: accepted for processing, then not donated
    refused = donor.client.post("/consent", data=large, content_type="application/octet-stream")
    assert refused.status_code == 413  # the same body anywhere else
    assert donor.upload([large]).status_code == 303
    tus = Tus(donor)
    created = tus.create(len(large))
    assert created.status_code == 201
    appended = tus.patch(created.headers["Location"], 0, large)
    assert appended.status_code == 204, appended.get_data(as_text=True)
    whole = tus.create(len(large), large)  # creation-with-upload
    assert whole.status_code == 201, whole.get_data(as_text=True)


def test_an_ethics_document_above_the_body_limit_is_accepted(researcher: Browser) -> None:  # noqa: F811
    def document() -> tuple[io.BytesIO, str]:
        return io.BytesIO(b"%PDF-1.4" + b"\0" * 2 * MIB), "approval.pdf"

    profile = researcher.submit("/researcher/profile", {"ethics": document()})
    assert profile.status_code == 413  # the same file sent to a form that takes none
    form = {**FORM, "action": "submit", "ethics": document()}
    assert researcher.submit("/researcher/requests/new", form).status_code == 303


def test_huge_ids_in_paths_are_not_found(app: Flask, make_user) -> None:  # type: ignore[no-untyped-def]
    reader = _logged_in(app, make_user, "r@example.org", "researcher")
    steward = _logged_in(app, make_user, "s@example.org", "steward")
    for number in (HUGE, JUST_TOO_BIG, "9" * 5000):
        assert reader.client.post(f"/api/notices/{number}/acknowledge").status_code == 404
        acknowledge = f"/researcher/notices/{number}/acknowledge"
        assert reader.submit("/researcher/", {}, action=acknowledge).status_code == 404
        assert reader.client.get(f"/researcher/releases/r1/files/{number}").status_code == 404
        for action in (f"/steward/files/{number}/decision",
                       f"/steward/withdrawals/{number}/acknowledge"):
            answer = steward.submit("/steward/donations", {"decision": "approve"}, action=action)
            assert answer.status_code == 404, action


def test_a_huge_id_in_a_query_is_a_clear_400(app: Flask, make_user) -> None:  # type: ignore[no-untyped-def]
    steward = _logged_in(app, make_user, "s@example.org", "steward")
    for number in (HUGE, JUST_TOO_BIG):
        response = steward.client.get(f"/steward/audit?before_id={number}")
        assert response.status_code == 400
        assert "no audit entry with that number" in response.get_data(as_text=True)


def test_the_api_refuses_a_body_that_is_not_json_with_415(app: Flask, make_user) -> None:  # type: ignore[no-untyped-def]
    bearer = _bearer(_logged_in(app, make_user, "r@example.org", "researcher"))
    body = '{"use": {"purpose": "health"}}'
    for path in ("/api/requests/preview", "/api/requests"):
        response = app.test_client().post(
            path, data=body, content_type="text/plain", headers=bearer
        )
        assert response.status_code == 415
        assert response.mimetype == "application/problem+json"
        assert "application/json" in response.get_json()["detail"]


def test_an_oversized_api_body_is_a_413_problem(app: Flask, make_user) -> None:  # type: ignore[no-untyped-def]
    bearer = _bearer(_logged_in(app, make_user, "r@example.org", "researcher"))
    body = Generated(2 * MIB)
    response = _send(
        app.test_client(), "/api/requests/preview", body, "application/json", 2 * MIB, bearer
    )
    assert response.status_code == 413
    assert response.mimetype == "application/problem+json"
    assert body.read_so_far == 0

