"""Honest failure semantics: what is committed stays committed, and errors say what they are.

- a committed withdrawal whose clean-up fails (an object already gone, storage down) is a
  confirmation, not a 500 claiming that nothing was stored;
- the database unavailable (closed port, a killed connection, a dropped database) is a 503
  with Retry-After and a correlation ID, on a page that needs no database;
- storage full is a 507, storage unreachable a 503; the API and tus answer problem JSON.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

import consent as consents
import storage
from donation_portal import create_app
from donation_portal.adapters import migrate
from donation_portal.adapters.db import make_engine
from donation_portal.adapters.keystore import DatabaseKeyStore
from donation_portal.adapters.models import AccessRequest, DonatedFile, Donation, StoredObject
from donation_portal.web import public
from donation_portal.workflows import accounts, maintenance, review, tokens

from .conftest import PASSWORD, Browser, enrol_totp
from .research.test_api_requests import ETHICS, NEW, api  # noqa: F401 - the fixture
from .research.test_cohort_filters import researcher  # noqa: F401 - the fixture

CLOSED_PORT = "postgresql+psycopg://nobody@127.0.0.1:1/none"
CORRELATION = re.compile(r'<code class="correlation-id">([0-9a-f]{16})</code>')
CONSENT_ID = re.compile(r"Consent ID: <code>([a-z2-7]+)</code>")
CODE = re.compile(r'<code class="secret">([^<]+)</code>')


def _store(app: Flask, session: Session) -> storage.ObjectStore:
    return storage.ObjectStore(
        storage.LocalBackend(app.config["STORAGE_DIR"]),
        storage.KeyRing.load(app.config["KEY_FILE"]),
        DatabaseKeyStore(session),
    )


def _files_of(app: Flask, db_session: Session, consent_id: str, count: int) -> list[str]:
    """``count`` stored, accepted files under the consent, recorded the way ingest does."""
    consent = consents.get_consent(db_session, consent_id)
    donor_id = int(consent.subject_ref.removeprefix("user:"))
    store = _store(app, db_session)
    store.ensure_scope(consent_id)
    donation = Donation(id="d-failures", donor_id=donor_id, consent_id=consent_id,
                        submission_key="k-failures")
    db_session.add(donation)
    db_session.flush()
    object_ids = []
    for position in range(1, count + 1):
        info = store.put(consent_id, io.BytesIO(b"de-identified image %d" % position))
        db_session.add(StoredObject(**dataclasses.asdict(info)))
        db_session.flush()
        db_session.add(DonatedFile(donation_id=donation.id, consent_id=consent_id,
                                   position=position, size=info.size, status="accepted",
                                   object_id=info.object_id))
        object_ids.append(info.object_id)
    db_session.commit()
    return object_ids


def _backend(app: Flask) -> storage.LocalBackend:
    return storage.LocalBackend(app.config["STORAGE_DIR"])


def _signed(browser: Browser) -> tuple[str, str]:
    assert browser.register("erase@example.org").status_code == 303
    page = browser.sign_consent().get_data(as_text=True)
    return CONSENT_ID.search(page).group(1), CODE.search(page).group(1)


# -- a committed withdrawal stays a success ------------------------------------------------


def test_an_erase_withdrawal_with_an_object_already_gone_is_confirmed(
    app: Flask, browser: Browser, db_session: Session
) -> None:
    consent_id, _ = _signed(browser)
    gone, kept = _files_of(app, db_session, consent_id, 2)
    _backend(app).delete(gone)  # lost before the withdrawal (a crash, an operator)

    done = browser.submit("/consent/withdraw", {"confirm": "yes", "scope": "all",
                                                "mode": "erase"})

    page = done.get_data(as_text=True)
    assert done.status_code == 200, page
    assert "Nothing you sent was stored" not in page
    assert consents.state(db_session, consent_id) == consents.WITHDRAWN
    db_session.expire_all()
    rows = db_session.scalars(select(DonatedFile)).all()
    assert {row.status for row in rows} == {"erased"} and all(r.object_id is None for r in rows)
    assert db_session.get(StoredObject, kept) is None
    assert list(_backend(app).list()) == []  # the other object was deleted after the commit


def test_a_failing_deletion_after_a_committed_withdrawal_is_left_to_the_reconciler(
    app: Flask, browser: Browser, db_session: Session, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    consent_id, code = _signed(browser)
    (object_id,) = _files_of(app, db_session, consent_id, 1)
    browser.logout()

    def unavailable(self: Any, _object_id: str) -> None:
        raise storage.StorageUnavailable("backend timed out", _object_id)

    monkeypatch.setattr(storage.LocalBackend, "delete", unavailable)
    form = {"consent_id": consent_id, "code": code, "scope": "all", "mode": "erase",
            "confirm": "yes"}
    with caplog.at_level(logging.WARNING):
        done = browser.submit("/withdraw", form)

    assert done.status_code == 200, done.get_data(as_text=True)
    assert consents.state(db_session, consent_id) == consents.WITHDRAWN
    assert object_id in caplog.text  # the log names the object, nothing personal
    monkeypatch.undo()
    assert list(_backend(app).list()) == [object_id]  # unreadable already: its key is gone
    report = maintenance.reconcile_storage(db_session, _store(app, db_session), 0)
    assert report.orphans_deleted == [object_id]
    assert list(_backend(app).list()) == []


def test_an_error_after_a_commit_does_not_claim_that_nothing_was_stored(
    app: Flask, browser: Browser, db_session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    consent_id, code = _signed(browser)
    browser.logout()

    def broken(*_args: Any) -> str:
        raise RuntimeError("the confirmation page failed")

    monkeypatch.setattr(public, "withdrawal_confirmation", broken)
    form = {"consent_id": consent_id, "code": code, "scope": "all", "mode": "stop_use",
            "confirm": "yes"}
    reply = browser.submit("/withdraw", form)
    assert reply.status_code == 500
    assert "Nothing you sent was stored" not in reply.get_data(as_text=True)
    assert consents.state(db_session, consent_id) == consents.WITHDRAWN  # it was committed


def test_an_error_before_any_commit_says_nothing_was_stored(
    app: Flask, browser: Browser, db_session: Session, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _signed(browser)

    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(review, "expiring_consents", broken)
    steward = Browser(app.test_client())
    steward_user = accounts.create_user(db_session, "steward@example.org", PASSWORD, "steward")
    enrol_totp(app, db_session, steward_user)
    steward.login("steward@example.org")
    reply = steward.client.get("/steward/")
    page = reply.get_data(as_text=True)
    assert reply.status_code == 500
    assert "Nothing you sent was stored" in page
    correlation = CORRELATION.search(page).group(1)
    assert reply.headers["X-Correlation-ID"] == correlation
    assert correlation in caplog.text and "a bug" in caplog.text
    assert "Traceback" not in page and "RuntimeError" not in page


# -- the database unavailable ------------------------------------------------------------


def _assert_503(reply: Any, caplog: pytest.LogCaptureFixture, *, json: bool = False) -> str:
    body = reply.get_data(as_text=True)
    assert reply.status_code == 503, body
    assert int(reply.headers["Retry-After"]) > 0
    correlation = reply.headers["X-Correlation-ID"]
    if json:
        assert reply.mimetype == "application/problem+json"
        assert reply.json["status"] == 503 and reply.json["correlation_id"] == correlation
    else:
        assert CORRELATION.search(body).group(1) == correlation
        assert "Log out" not in body  # the page that needs no current user
    assert f"correlation {correlation}" in caplog.text
    assert "127.0.0.1" not in body and "psycopg" not in body
    return correlation


@pytest.fixture
def closed_port_app(app_config: dict[str, Any]) -> Iterator[Flask]:
    app = create_app({**app_config, "DATABASE_URL": CLOSED_PORT})
    yield app
    app.extensions["portal_engine"].dispose()


def test_a_database_on_a_closed_port_is_a_503_not_a_500(
    closed_port_app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    browser = Browser(closed_port_app.test_client())
    reply = browser.login("someone@example.org")  # the login page itself needs no database
    _assert_503(reply, caplog)
    api_reply = closed_port_app.test_client().get(
        "/api/requests", headers={"Authorization": "Bearer dp_whatever"}
    )
    _assert_503(api_reply, caplog, json=True)


@pytest.fixture
def logged_in_donor(app: Flask, browser: Browser) -> Browser:
    _signed(browser)
    return browser


def _database_stops(app: Flask) -> None:
    broken = make_engine(CLOSED_PORT)
    app.extensions["portal_sessionmaker"] = sessionmaker(bind=broken)


def test_a_logged_in_page_with_the_database_gone_renders_without_the_database(
    app: Flask, logged_in_donor: Browser, caplog: pytest.LogCaptureFixture
) -> None:
    _database_stops(app)
    reply = logged_in_donor.client.get("/")  # loading the user fails first
    _assert_503(reply, caplog)


def test_tus_and_api_paths_answer_problem_json_when_the_database_is_gone(
    app: Flask, logged_in_donor: Browser, caplog: pytest.LogCaptureFixture
) -> None:
    page = logged_in_donor.get("/donations/new")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    _database_stops(app)
    reply = logged_in_donor.client.post(
        "/uploads/",
        headers={"Tus-Resumable": "1.0.0", "Upload-Length": "10", "X-CSRFToken": csrf},
    )
    _assert_503(reply, caplog, json=True)
    reply = logged_in_donor.client.get(
        "/api/releases", headers={"Authorization": "Bearer dp_whatever"}
    )
    _assert_503(reply, caplog, json=True)


def test_an_error_raised_while_the_database_failed_is_still_a_503(
    app: Flask, db_session: Session, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A commit in a ``finally`` after a dead connection raises PendingRollbackError; the
    outage in its context is what the donor must hear about."""
    from sqlalchemy.exc import OperationalError, PendingRollbackError

    def connection_died(_session: Session) -> list:
        try:
            raise OperationalError("SELECT 1", {}, ConnectionError("server closed the connection"))
        except OperationalError:
            raise PendingRollbackError("This Session's transaction has been rolled back")  # noqa: B904

    steward_user = accounts.create_user(db_session, "steward@example.org", PASSWORD, "steward")
    enrol_totp(app, db_session, steward_user)
    steward = Browser(app.test_client())
    steward.login("steward@example.org")
    monkeypatch.setattr(review, "expiring_consents", connection_died)
    _assert_503(steward.client.get("/steward/"), caplog)


@pytest.fixture
def postgres_app(empty_database_url: str, instance_path: Path) -> Iterator[tuple[Flask, str]]:
    """An app on a real PostgreSQL database of its own (no test transaction around it)."""
    if not empty_database_url.startswith("postgresql"):
        pytest.skip("terminating connections and dropping the database is PostgreSQL's")
    migrate.upgrade(empty_database_url)
    app = create_app({"ENV": "test", "INSTANCE_PATH": str(instance_path),
                      "DATABASE_URL": empty_database_url})
    with Session(app.extensions["portal_engine"]) as session:
        steward_user = accounts.create_user(session, "steward@example.org", PASSWORD, "steward")
        enrol_totp(app, session, steward_user)
    yield app, empty_database_url
    app.extensions["portal_engine"].dispose()


def test_a_connection_killed_mid_request_is_a_503_and_the_next_request_recovers(
    postgres_app: tuple[Flask, str], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, url = postgres_app
    steward = Browser(app.test_client())
    assert steward.login("steward@example.org").status_code == 303
    admin = make_engine(url)
    real = review.expiring_consents

    def killed_midway(session: Session) -> list:
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            conn.commit()
        return real(session)

    try:
        monkeypatch.setattr(review, "expiring_consents", killed_midway)
        _assert_503(steward.client.get("/steward/"), caplog)
        monkeypatch.undo()
        assert steward.client.get("/steward/").status_code == 200  # the pool reconnects
    finally:
        admin.dispose()


def test_a_dropped_database_is_a_503(
    postgres_app: tuple[Flask, str], caplog: pytest.LogCaptureFixture
) -> None:
    app, url = postgres_app
    steward = Browser(app.test_client())
    assert steward.login("steward@example.org").status_code == 303
    assert steward.client.get("/steward/").status_code == 200
    from tests.conftest import postgres_admin_url

    admin = make_engine(postgres_admin_url()).execution_options(isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            name = url.rsplit("/", 1)[1]
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
    _assert_503(steward.client.get("/steward/"), caplog)


# -- storage full or unreachable -----------------------------------------------------------


def test_storage_full_on_the_api_is_a_507_problem_and_stores_nothing(
    app: Flask, api: tuple[FlaskClient, dict[str, str]], db_session: Session,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    import base64

    client, bearer = api

    def full(self: Any, object_id: str) -> None:
        raise storage.StorageFull("no space left on the storage volume", object_id)

    monkeypatch.setattr(storage.LocalBackend, "create", full)
    body = {**NEW, "ethics_document": base64.b64encode(ETHICS).decode()}
    reply = client.post("/api/requests", json=body, headers=bearer)
    assert reply.status_code == 507, reply.get_data(as_text=True)
    assert reply.mimetype == "application/problem+json"
    assert "storage is full" in reply.json["detail"]
    assert reply.json["correlation_id"] == reply.headers["X-Correlation-ID"]
    assert f"correlation {reply.json['correlation_id']}" in caplog.text
    assert db_session.scalars(select(AccessRequest)).all() == []


@pytest.mark.parametrize(("error", "status"), [
    (storage.StorageFull("disk full"), 507),
    (storage.StorageUnavailable("endpoint timed out"), 503),
])
def test_storage_errors_from_a_page_are_507_and_503(
    researcher: Browser, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
    error: storage.StorageError, status: int,
) -> None:
    def failing(*_args: Any) -> str:
        raise error

    monkeypatch.setattr(tokens, "issue", failing)
    reply = researcher.submit("/researcher/", {}, action="/researcher/tokens")
    page = reply.get_data(as_text=True)
    assert reply.status_code == status
    assert CORRELATION.search(page)
    assert str(error) not in page
    if status == 507:
        assert "storage is full" in page
    else:
        assert int(reply.headers["Retry-After"]) > 0


def test_a_refused_research_action_with_a_server_status_gets_a_correlation_id(
    app: Flask, researcher: Browser, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    from donation_portal.workflows import releases

    def integrity(*_args: Any) -> str:
        raise releases.ResearchError("This file failed its integrity check.", 500)

    monkeypatch.setattr(tokens, "issue", integrity)
    reply = researcher.submit("/researcher/", {}, action="/researcher/tokens")
    assert reply.status_code == 500
    assert CORRELATION.search(reply.get_data(as_text=True))
