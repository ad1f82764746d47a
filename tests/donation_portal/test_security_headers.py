"""Security headers on every kind of response: pages, downloads, the API, errors, static files.

Pages may run only the portal's own script files; whatever is not a page (a download, JSON,
a problem reply, a static file) is sandboxed. Nothing but static files may be stored by a
browser or a proxy, and no response names the software or its version.
"""

from __future__ import annotations

import io
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from donation_portal import __version__, create_app
from donation_portal.adapters.models import AccessRequest, Donation, Release
from donation_portal.adapters.settings import ConfigError, load_settings

from .conftest import PASSWORD, Browser
from .phi import real_file
from .research.test_cohort_filters import FORM, researcher  # noqa: F401 - the fixture
from .research.test_tampered_release import release  # noqa: F401 - the fixture

FEATURES_OFF = ("camera", "microphone", "geolocation", "payment", "usb")
ANONYMOUS_PAGES = ("/", "/login", "/register", "/withdraw", "/receipts/verify")
CLOSED_PORT = "postgresql+psycopg://nobody@127.0.0.1:1/none"


def policy(response: TestResponse) -> dict[str, str]:
    """The Content-Security-Policy, directive by directive."""
    directives = (part.strip() for part in response.headers["Content-Security-Policy"].split(";"))
    return {name: rest.strip() for name, _, rest in (d.partition(" ") for d in directives if d)}


def assert_secured(response: TestResponse) -> None:
    """What every response carries, whatever it is."""
    headers = response.headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["X-Frame-Options"] == "DENY"
    assert policy(response)["frame-ancestors"] == "'none'"
    for feature in FEATURES_OFF:
        assert f"{feature}=()" in headers["Permissions-Policy"]
    assert "Strict-Transport-Security" not in headers  # the tests speak plain HTTP
    assert "Server" not in headers and __version__ not in str(headers)


def assert_page(response: TestResponse) -> None:
    assert_secured(response)
    rules = policy(response)
    assert rules["default-src"] == "'self'"
    assert rules["script-src"] == "'self'" and rules["style-src"] == "'self'"
    assert rules["object-src"] == "'none'" and rules["base-uri"] == "'none'"
    assert rules["form-action"] == "'self'"
    assert "sandbox" not in rules
    assert response.headers["Cache-Control"] == "no-store"


def assert_sandboxed(response: TestResponse, *, stored: bool = False) -> None:
    """A download, JSON or a static file: loads nothing and runs nothing if opened."""
    assert_secured(response)
    rules = policy(response)
    assert rules["default-src"] == "'none'" and "sandbox" in rules
    if not stored:
        assert response.headers["Cache-Control"] == "no-store"


class InlineCode(HTMLParser):
    """Finds what a CSP without 'unsafe-inline' blocks, and markup inside ``<title>``."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self.in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if self.in_title:
            self.found.append(f"<{tag}> inside <title>")
        if tag == "title":
            self.in_title = True
        if tag == "script" and "src" not in names:
            self.found.append("inline <script>")
        if tag == "style" or "style" in names:
            self.found.append(f"inline style on <{tag}>")
        self.found += [f"{name} on <{tag}>" for name in names if name.startswith("on")]
        self.found += [f"javascript: URL on <{tag}>" for _, value in attrs
                       if value and value.strip().lower().startswith("javascript:")]

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False

    def handle_data(self, data: str) -> None:
        if self.lasttag == "script" and data.strip():
            self.found.append("inline script text")


def inline_code(html: str) -> list[str]:
    parser = InlineCode()
    parser.feed(html)
    return parser.found


def _login(app: Flask, make_user, email: str, role: str) -> Browser:  # type: ignore[no-untyped-def]
    make_user(email, role)
    browser = Browser(app.test_client())
    assert browser.login(email, PASSWORD).status_code == 303
    return browser


def test_anonymous_pages_allow_only_the_portal_s_own_files(client: FlaskClient) -> None:
    for path in ANONYMOUS_PAGES:
        response = client.get(path)
        assert response.status_code == 200, path
        assert_page(response)
        assert inline_code(response.get_data(as_text=True)) == [], path


def test_every_page_a_person_sees_works_under_the_policy(  # type: ignore[no-untyped-def]
    app: Flask, donor: Browser, make_user
) -> None:
    """No inline script, style or event handler on any page of any role: each would be
    blocked by the Content-Security-Policy."""
    uploaded = donor.upload([real_file("CT_small.dcm").content])
    assert uploaded.status_code == 303
    donation_page = uploaded.headers["Location"]
    signed_again = donor.client.get("/consent")  # the consent page of a signed consent
    pages = {path: donor.client.get(path) for path in
             ("/", "/donations/new", "/consent/withdraw", donation_page)}
    pages["/consent"] = signed_again
    steward = _login(app, make_user, "steward@example.org", "steward")
    for path in ("/steward/", "/steward/donations", "/steward/withdrawals",
                 "/steward/templates", "/steward/audit", "/steward/requests/"):
        pages[path] = steward.client.get(path)
    reader = _login(app, make_user, "researcher@example.org", "researcher")
    for path in ("/researcher/", "/researcher/profile", "/researcher/requests/new"):
        pages[path] = reader.client.get(path)
    pages["token"] = reader.submit("/researcher/", {}, action="/researcher/tokens")
    for path, response in pages.items():
        assert response.status_code == 200, path
        assert_page(response)
        assert inline_code(response.get_data(as_text=True)) == [], path


def test_the_signed_consent_page_with_its_receipt_works_under_the_policy(
    browser: Browser,
) -> None:
    assert browser.register("donor@example.org").status_code == 303
    signed = browser.sign_consent()
    assert signed.status_code == 200
    assert_page(signed)
    assert inline_code(signed.get_data(as_text=True)) == []


def test_json_a_logged_in_page_polls_is_sandboxed_and_never_stored(donor: Browser) -> None:
    uploaded = donor.upload([real_file("CT_small.dcm").content])
    status = donor.client.get(uploaded.headers["Location"] + "/status.json")
    assert status.status_code == 200
    assert_sandboxed(status)


def test_downloads_are_sandboxed_and_never_stored(  # type: ignore[no-untyped-def]
    app: Flask, make_user, db_session: Session, researcher: Browser,  # noqa: F811
    release: Release,  # noqa: F811
) -> None:
    base = f"/researcher/releases/{release.id}"
    api = f"/api/releases/{release.id}"
    made = researcher.submit("/researcher/tokens", {"name": "t", "scopes": ["releases:read"]})
    token = re.search(r'class="token">([^<]+)<', made.get_data(as_text=True)).group(1)
    for path in (f"{base}/files/1", f"{base}/release.tar", f"{base}/manifest.csv",
                 f"{base}/manifest.json", f"{api}/files/1", f"{api}/release.tar",
                 f"{api}/manifest.csv", f"{api}/manifest"):
        bearer = {"Authorization": f"Bearer {token}"} if path.startswith("/api/") else {}
        response = researcher.client.get(path, headers=bearer)
        assert response.status_code == 200, path
        response.get_data()  # the whole stream
        assert_sandboxed(response)

    ethics = (io.BytesIO(b"<html><script>alert(1)</script>"), "approval.html")
    form = {**FORM, "action": "submit", "ethics": ethics}
    assert researcher.submit("/researcher/requests/new", form).status_code == 303
    access = db_session.scalars(
        select(AccessRequest).where(AccessRequest.ethics_object_id.is_not(None))
    ).one()
    steward = _login(app, make_user, "reader@example.org", "steward")
    document = steward.client.get(f"/steward/requests/{access.id}/ethics")
    assert document.status_code == 200
    assert document.headers["Content-Disposition"].startswith("attachment")
    assert_sandboxed(document)
    fhir = steward.client.get(f"/steward/consents/{_a_consent(db_session)}/fhir")
    assert fhir.status_code == 200
    assert_sandboxed(fhir)


def _a_consent(db_session: Session) -> str:
    return db_session.scalars(select(Donation.consent_id)).first()


def test_api_replies_are_sandboxed_and_never_stored(  # type: ignore[no-untyped-def]
    app: Flask, client: FlaskClient, make_user
) -> None:
    reader = _login(app, make_user, "researcher@example.org", "researcher")
    for response in (
        client.get("/api/openapi.json"),
        client.get("/api/releases"),  # 401 problem
        reader.client.get("/api/releases"),
        reader.client.get("/api/notices"),
        client.get("/.well-known/receipt-keys.json"),
    ):
        assert response.mimetype.endswith("json")
        assert_sandboxed(response)


def test_healthz_names_no_versions_and_is_never_stored(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert_sandboxed(response)
    body = response.get_data(as_text=True)
    assert __version__ not in body and not re.search(r"\d+\.\d+\.\d+", body)


def test_error_pages_carry_the_headers(client: FlaskClient) -> None:
    missing = client.get("/no-such-page")
    assert missing.status_code == 404
    assert_page(missing)
    assert inline_code(missing.get_data(as_text=True)) == []
    api_missing = client.get("/api/no-such-thing")
    assert api_missing.status_code == 404 and api_missing.mimetype == "application/problem+json"
    assert_sandboxed(api_missing)
    wrong_method = client.delete("/login")
    assert wrong_method.status_code == 405
    assert_page(wrong_method)


def test_the_503_page_carries_the_headers(app_config: dict[str, Any]) -> None:
    app = create_app({**app_config, "DATABASE_URL": CLOSED_PORT})
    try:
        reply = Browser(app.test_client()).login("someone@example.org")
        assert reply.status_code == 503
        assert_page(reply)
        assert inline_code(reply.get_data(as_text=True)) == []
        api_reply = app.test_client().get(
            "/api/requests", headers={"Authorization": "Bearer dp_whatever"}
        )
        assert api_reply.status_code == 503
        assert_sandboxed(api_reply)
    finally:
        app.extensions["portal_engine"].dispose()


@pytest.mark.parametrize("name", ["portal.css", "print.js", "donation-status.js"])
def test_static_files_are_not_sniffed_and_may_be_cached(client: FlaskClient, name: str) -> None:
    response = client.get(f"/static/{name}")
    assert response.status_code == 200
    assert_sandboxed(response, stored=True)
    assert "no-store" not in response.headers.get("Cache-Control", "")


def test_production_tells_browsers_to_use_https_only(production_app: Flask) -> None:
    client = production_app.test_client()
    for path in ("/login", "/api/openapi.json", "/static/portal.css"):
        response = client.get(path, base_url="https://portal.example")
        hsts = response.headers["Strict-Transport-Security"]
        assert hsts == "max-age=31536000; includeSubDomains", path


def test_a_negative_hsts_setting_is_refused_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="HSTS_SECONDS"):
        load_settings(tmp_path, environ={"PORTAL_ENV": "test", "PORTAL_HSTS_SECONDS": "-1"})
