"""API tokens (issue 12, point 4): the API takes scoped, expiring, revocable tokens only.

Tokens are made, listed and revoked through the researcher's pages, revoked by an admin
through theirs, and used against the API as a script would; the clock the API checks expiry
by is replaced (``app.extensions["portal_clock"]``) to step past an expiry.
"""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from consent import AuditEntry
from consent.canonical import as_utc
from donation_portal.adapters.models import ApiToken

from .conftest import PASSWORD, Browser

READ_RELEASES, READ_REQUESTS = "releases:read", "requests:read"
CREATE_REQUESTS, ACKNOWLEDGE_NOTICES = "requests:create", "notices:acknowledge"
ALL_SCOPES = (READ_RELEASES, READ_REQUESTS, CREATE_REQUESTS, ACKNOWLEDGE_NOTICES)
SHOWN = re.compile(r'class="token">([^<]+)<')
USE = {"purpose": "health", "publishes": True}
NEW = {"title": "Lung nodules", "abstract": "A study of lung imaging data.", "use": USE}

# every API operation, with the scope it needs (nothing is donated: a call allowed through
# answers 200, 404 or 422, never 401 or 403)
ENDPOINTS = [
    ("GET", "/api/requests", None, READ_REQUESTS),
    ("POST", "/api/requests", NEW, CREATE_REQUESTS),
    ("POST", "/api/requests/preview", {"use": USE}, CREATE_REQUESTS),
    ("GET", "/api/releases", None, READ_RELEASES),
    ("GET", "/api/releases/{release_id}/manifest", None, READ_RELEASES),
    ("GET", "/api/releases/{release_id}/manifest.csv", None, READ_RELEASES),
    ("GET", "/api/releases/{release_id}/files/{position}", None, READ_RELEASES),
    ("GET", "/api/releases/{release_id}/release.tar", None, READ_RELEASES),
    ("GET", "/api/notices", None, READ_RELEASES),
    ("POST", "/api/notices/{notice_id}/acknowledge", None, ACKNOWLEDGE_NOTICES),
]


def _login(app: Flask, make_user, email: str, role: str) -> Browser:  # type: ignore[no-untyped-def]
    make_user(email, role)
    browser = Browser(app.test_client())
    assert browser.login(email, PASSWORD).status_code == 303
    return browser


@pytest.fixture
def researcher(app: Flask, make_user) -> Browser:  # type: ignore[no-untyped-def]
    return _login(app, make_user, "researcher@example.org", "researcher")


def _create(browser: Browser, **form: object) -> TestResponse:
    return browser.submit("/researcher/tokens", form)


def _token(browser: Browser, scopes: tuple[str, ...] = ALL_SCOPES, **form: object) -> str:
    """A token made on the researcher's page, as its value shown there once."""
    page = _create(browser, **{"name": "script", "scopes": list(scopes), **form})
    assert page.status_code == 200, page.get_data(as_text=True)
    return SHOWN.search(page.get_data(as_text=True)).group(1)


def _call(client: FlaskClient, token: str | None, method: str = "GET",
          path: str = "/api/releases", body: object = None) -> TestResponse:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.open(path, method=method, json=body, headers=headers)


def _row(db_session: Session, token: str) -> ApiToken:
    digest = hashlib.sha256(token.encode()).hexdigest()
    db_session.expire_all()
    return db_session.scalars(select(ApiToken).where(ApiToken.token_hash == digest)).one()


def _set_clock(app: Flask, moment: datetime) -> None:
    app.extensions["portal_clock"] = lambda: moment


def _refused(reply: TestResponse, status: int, words: str) -> None:
    assert reply.status_code == status, reply.get_data(as_text=True)
    assert reply.mimetype == "application/problem+json"
    assert words in reply.get_json()["detail"]
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")


# -- creation ---------------------------------------------------------------------------


def test_a_token_is_shown_once_uncached_and_stored_as_a_digest_with_its_choices(
    researcher: Browser, db_session: Session
) -> None:
    before = datetime.now(UTC)
    page = _create(researcher, name="analysis server", days="30",
                   scopes=[READ_RELEASES, ACKNOWLEDGE_NOTICES])
    assert page.status_code == 200
    assert "no-store" in page.headers["Cache-Control"]
    token = SHOWN.search(page.get_data(as_text=True)).group(1)
    row = _row(db_session, token)
    assert (row.name, row.scopes) == ("analysis server", [ACKNOWLEDGE_NOTICES, READ_RELEASES])
    assert as_utc(row.created_at) >= before
    assert as_utc(row.expires_at) - as_utc(row.created_at) == timedelta(days=30)
    assert row.last_used_at is None and row.revoked_at is None
    stored = [str(getattr(row, column.key)) for column in ApiToken.__table__.columns]
    assert not any(token in value or token[3:] in value for value in stored)


def test_a_token_lasts_90_days_by_default_and_at_most_a_year(
    researcher: Browser, db_session: Session
) -> None:
    default = _row(db_session, _token(researcher))
    assert as_utc(default.expires_at) - as_utc(default.created_at) == timedelta(days=90)
    longest = _row(db_session, _token(researcher, days="365"))
    assert as_utc(longest.expires_at) - as_utc(longest.created_at) == timedelta(days=365)
    for days in ("366", "0", "-5", "forever"):
        refused = _create(researcher, name="too long", days=days, scopes=[READ_RELEASES])
        assert refused.status_code == 422, days
        assert not SHOWN.search(refused.get_data(as_text=True))
    unknown = _create(researcher, name="admin", scopes=["everything"])
    assert unknown.status_code == 422 and "Unknown scope" in unknown.get_data(as_text=True)
    assert len(db_session.scalars(select(ApiToken)).all()) == 2


def test_a_token_made_without_choices_only_reads_releases(
    researcher: Browser, db_session: Session
) -> None:
    """The form ticks the read scope; a form sent with nothing gets only that, for 90 days."""
    page = researcher.submit("/researcher/", {}, action="/researcher/tokens")
    row = _row(db_session, SHOWN.search(page.get_data(as_text=True)).group(1))
    assert row.scopes == [READ_RELEASES]
    assert as_utc(row.expires_at) - as_utc(row.created_at) == timedelta(days=90)


# -- the API: tokens only, within their scopes and lifetime --------------------------------


def test_the_api_refuses_a_login_session(app: Flask, researcher: Browser) -> None:
    """A cookie the browser adds to a cross-site request authenticates nothing here."""
    foreign = {"Origin": "https://evil.example", "Referer": "https://evil.example/"}
    acknowledge = researcher.client.post("/api/notices/1/acknowledge", headers=foreign)
    _refused(acknowledge, 401, "login session is not accepted")
    _refused(researcher.client.get("/api/releases"), 401, "API token only")
    token = _token(researcher, scopes=(READ_RELEASES,))
    assert _call(researcher.client, token).status_code == 200  # the token decides


def test_each_operation_needs_its_scope(app: Flask, researcher: Browser) -> None:
    client = app.test_client()
    without = {scope: _token(researcher, tuple(s for s in ALL_SCOPES if s != scope))
               for scope in ALL_SCOPES}
    only = {scope: _token(researcher, (scope,)) for scope in ALL_SCOPES}
    for method, template, body, scope in ENDPOINTS:
        path = template.format(release_id="r1", position=1, notice_id=1)
        refused = _call(client, without[scope], method, path, body)
        _refused(refused, 403, scope)
        assert f'scope="{scope}"' in refused.headers["WWW-Authenticate"]
        allowed = _call(client, only[scope], method, path, body)
        assert allowed.status_code not in (401, 403), (method, path)


def test_the_openapi_document_names_each_operation_s_scope(app: Flask, client: FlaskClient) -> None:
    document = client.get("/api/openapi.json").get_json()
    for method, path, _, scope in ENDPOINTS:
        operation = document["paths"][path][method.lower()]
        assert operation["x-scope"] == scope and scope in operation["description"]
    scheme = document["components"]["securitySchemes"]["token"]
    assert all(scope in scheme["description"] for scope in ALL_SCOPES)
    assert "cookie is not taken" in scheme["description"]
    routes = {
        (method, re.sub(r"<(?:int:)?(\w+)>", r"{\1}", rule.rule))
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/") and rule.rule != "/api/openapi.json"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert routes == {(method, path) for method, path, _, _ in ENDPOINTS}  # none forgotten


def test_an_expired_token_is_refused(app: Flask, researcher: Browser, db_session: Session) -> None:
    token = _token(researcher, days="1")
    expires = as_utc(_row(db_session, token).expires_at)
    client = app.test_client()
    _set_clock(app, expires - timedelta(minutes=1))
    assert _call(client, token).status_code == 200
    _set_clock(app, expires)
    _refused(_call(client, token), 401, "expired on")
    assert 'error="invalid_token"' in _call(client, token).headers["WWW-Authenticate"]
    listed = researcher.get("/researcher/tokens")
    assert "expired" in listed


def test_unknown_and_missing_tokens_are_refused(client: FlaskClient) -> None:
    _refused(_call(client, None), 401, "Authorization: Bearer")
    _refused(_call(client, "dp_not-a-token"), 401, "not valid")


def test_the_last_use_is_recorded(app: Flask, researcher: Browser, db_session: Session) -> None:
    token = _token(researcher)
    client = app.test_client()
    first = datetime.now(UTC) + timedelta(days=1)
    _set_clock(app, first)
    assert _call(client, token).status_code == 200
    assert as_utc(_row(db_session, token).last_used_at) == first
    _set_clock(app, first + timedelta(seconds=30))  # within the minute: not written again
    assert _call(client, token).status_code == 200
    assert as_utc(_row(db_session, token).last_used_at) == first
    later = first + timedelta(hours=2)
    _set_clock(app, later)
    assert _call(client, token, "GET", "/api/notices").status_code == 200
    assert as_utc(_row(db_session, token).last_used_at) == later
    assert later.strftime("%Y-%m-%d %H:%M") in researcher.get("/researcher/tokens")


# -- listing and revoking ------------------------------------------------------------------


def test_an_owner_lists_and_revokes_their_tokens(
    app: Flask, make_user, researcher: Browser, db_session: Session  # type: ignore[no-untyped-def]
) -> None:
    kept = _token(researcher, name="laptop")
    revoked = _token(researcher, name="old server")
    listed = researcher.get("/researcher/tokens")
    assert "laptop" in listed and "old server" in listed and CREATE_REQUESTS in listed
    for token in (kept, revoked):
        assert token not in listed and _row(db_session, token).token_hash not in listed

    other = _login(app, make_user, "other@example.org", "researcher")
    assert "old server" not in other.get("/researcher/tokens")
    target = f"/researcher/tokens/{_row(db_session, revoked).id}/revoke"
    assert other.submit("/researcher/tokens", {}, action=target).status_code == 404
    client = app.test_client()
    assert _call(client, revoked).status_code == 200

    answer = researcher.submit("/researcher/tokens", {}, action=target)
    assert answer.status_code == 303
    _refused(_call(client, revoked), 401, "revoked")
    assert _call(client, kept).status_code == 200
    assert "revoked" in researcher.get("/researcher/tokens")
    assert _row(db_session, revoked).revoked_by == _row(db_session, kept).user_id


def test_an_admin_revokes_any_researcher_s_token(
    app: Flask, make_user, researcher: Browser, db_session: Session  # type: ignore[no-untyped-def]
) -> None:
    token = _token(researcher, name="shared notebook")
    admin = _login(app, make_user, "admin@example.org", "admin")
    steward = _login(app, make_user, "steward@example.org", "steward")
    assert steward.client.get("/steward/requests/tokens").status_code == 403
    assert researcher.client.get("/steward/requests/tokens").status_code == 403
    assert "/steward/requests/tokens" in admin.get("/researcher/")
    page = admin.get("/steward/requests/tokens")
    assert "researcher@example.org" in page and "shared notebook" in page and token not in page

    row = _row(db_session, token)
    answer = admin.submit("/steward/requests/tokens", {},
                          action=f"/steward/requests/tokens/{row.id}/revoke")
    assert answer.status_code == 303
    _refused(_call(app.test_client(), token), 401, "revoked")
    assert f"/tokens/{row.id}/revoke" not in admin.get("/steward/requests/tokens")
    assert _row(db_session, token).revoked_by != row.user_id


# -- secrecy -------------------------------------------------------------------------------


def test_a_token_appears_in_no_log_and_no_audit_entry(
    app: Flask, researcher: Browser, db_session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="donation_portal")
    token = _token(researcher, scopes=(READ_RELEASES,))
    client = app.test_client()
    assert _call(client, token).status_code == 200
    assert _call(client, token, "POST", "/api/requests", NEW).status_code == 403
    _set_clock(app, datetime.now(UTC) + timedelta(days=91))
    assert _call(client, token).status_code == 401
    app.extensions.pop("portal_clock")
    target = f"/researcher/tokens/{_row(db_session, token).id}/revoke"
    assert researcher.submit("/researcher/tokens", {}, action=target).status_code == 303
    assert _call(client, token).status_code == 401
    assert _call(client, token + "x").status_code == 401
    assert "refused: expired" in caplog.text and "refused: revoked" in caplog.text
    assert token not in caplog.text and token[3:] not in caplog.text
    actions = {entry.action: str(entry.detail) for entry in db_session.scalars(select(AuditEntry))}
    assert {"researcher.token_created", "researcher.token_revoked"} <= set(actions)
    assert not any(token[3:] in detail for detail in actions.values())
