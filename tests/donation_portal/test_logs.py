"""Logs (issue 12, point 7): JSON lines carrying a request ID that every error reply shows,
and nothing secret or personal in them over a whole journey through the portal.

Output is captured where it leaves the process: the JSON handler on the root logger (its
stream swapped for a buffer), with every logger at DEBUG, so what werkzeug, gunicorn, Celery
or a library logs is checked as well as the portal's own lines.
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from types import SimpleNamespace
from typing import Any

import pydicom
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from werkzeug.serving import make_server
from werkzeug.test import TestResponse

import consent as consents
from donation_portal.adapters import logs

from .conftest import Browser
from .phi import real_file
from .test_worker import NOLOAD, Stack, _poll, donate_one, stacks  # noqa: F401 - the fixture

GENERATED_ID = re.compile(r"[0-9a-f]{16}")
PAGE_ID = re.compile(r'<code class="correlation-id">([^<]+)</code>')
SHOWN_TOKEN = re.compile(r'class="token">([^<]+)<')
SHOWN_CODE = re.compile(r'<code class="secret">([^<]+)</code>')
# what a person types or is handed that no log may repeat
TYPED_SECRETS = ("email", "password", "password_confirm", "new_password", "code", "full_name")
PLANTED = {
    "PatientName": "Plantedsurname^Plantedgiven",
    "PatientID": "PHI-ID-739154",
    "PatientBirthDate": "19580317",
    "OtherPatientIDs": "OTHER-ID-55821",
    "AccessionNumber": "ACC-99173",
    "InstitutionName": "Plantedtown General Hospital",
    "ReferringPhysicianName": "Referring^Plantedphysician",
}


@dataclass
class Captured:
    stream: io.StringIO

    def lines(self) -> list[dict[str, Any]]:
        """Every line written, each parsed as the JSON object it must be."""
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]


@pytest.fixture
def captured(app: Flask) -> Iterator[Captured]:
    """The JSON handler's output (the app factory installed it), every logger at DEBUG."""
    (handler,) = [h for h in logging.getLogger().handlers if h.name == logs.HANDLER_NAME]
    stream = io.StringIO()
    previous = handler.setStream(stream)
    loggers = [logging.getLogger(), logging.getLogger("donation_portal")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    try:
        yield Captured(stream)
    finally:
        handler.setStream(previous)  # type: ignore[arg-type]
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


# -- the format and the request ID ------------------------------------------------------------


def test_each_line_is_a_json_object_with_the_request_s_id(
    client: FlaskClient, captured: Captured
) -> None:
    reply = client.get("/api/releases", headers={"Authorization": "Bearer dp_not-a-token"})
    assert reply.status_code == 401
    request_id = reply.headers["X-Request-ID"]
    assert GENERATED_ID.fullmatch(request_id)
    lines = captured.lines()
    assert lines and all({"event", "level", "logger", "timestamp"} <= set(line) for line in lines)
    (refused,) = [line for line in lines if line["event"] == "API token refused: unknown"]
    assert refused["level"] == "info" and refused["logger"] == "donation_portal.workflows.tokens"
    assert refused["request_id"] == request_id
    assert reply.get_json()["request_id"] == request_id
    assert client.get("/").headers["X-Request-ID"] != request_id  # one per request


@pytest.fixture
def failing(app: Flask) -> Flask:
    """Routes failing as a bug and as an unreachable database would."""

    def bug() -> str:
        raise RuntimeError("a bug")

    def database_down() -> str:
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    app.add_url_rule("/test-bug", "test_bug", bug)
    app.add_url_rule("/test-database-down", "test_database_down", database_down)
    app.add_url_rule("/api/test-database-down", "test_api_database_down", database_down)
    return app


@pytest.mark.parametrize(
    ("path", "status", "json"),
    [
        ("/no-such-page", 404, False),
        ("/api/no-such-thing", 404, True),
        ("/test-bug", 500, False),
        ("/test-database-down", 503, False),
        ("/api/test-database-down", 503, True),
    ],
)
def test_every_error_reply_shows_the_request_id_of_its_log_lines(
    failing: Flask, captured: Captured, path: str, status: int, json: bool
) -> None:
    reply = failing.test_client().get(path)
    assert reply.status_code == status
    request_id = reply.headers["X-Request-ID"]
    if json:
        assert reply.mimetype == "application/problem+json"
        assert reply.get_json()["request_id"] == request_id
    else:
        assert PAGE_ID.findall(reply.get_data(as_text=True)) == [request_id]
    if status >= 500:
        assert reply.headers["X-Correlation-ID"] == request_id
        (error,) = [line for line in captured.lines() if line["level"] == "error"]
        assert error["request_id"] == request_id and f"correlation {request_id}" in error["event"]


def test_a_well_formed_incoming_request_id_is_kept(failing: Flask, captured: Captured) -> None:
    """A proxy's ID finds the portal's lines of the same request."""
    sent = "edge-7f3a9c1e-44b0-4d8e-9a21-0c5d2e6b8f10"
    reply = failing.test_client().get("/test-bug", headers={"X-Request-ID": sent})
    assert reply.headers["X-Request-ID"] == sent
    assert PAGE_ID.findall(reply.get_data(as_text=True)) == [sent]
    assert {line.get("request_id") for line in captured.lines()} == {sent}


@pytest.mark.parametrize(
    "sent",
    [
        "<script>alert(1)</script>",
        "short",
        "a" * 65,
        "has space-in-it",
        "semi;colon-12345",
        "ünïcode-12345678",
    ],
)
def test_a_malformed_incoming_request_id_is_replaced(
    failing: Flask, captured: Captured, sent: str
) -> None:
    reply = failing.test_client().get("/test-bug", headers={"X-Request-ID": sent})
    request_id = reply.headers["X-Request-ID"]
    assert GENERATED_ID.fullmatch(request_id)
    assert sent not in reply.get_data(as_text=True)
    assert sent not in captured.stream.getvalue()
    assert {line.get("request_id") for line in captured.lines()} == {request_id}


# -- the servers' access lines ---------------------------------------------------------------


def test_gunicorn_access_lines_keep_the_method_path_status_and_request_id_only(
    app: Flask, captured: Captured
) -> None:
    from gunicorn.config import Config
    from gunicorn.glogging import Logger

    config = Config()
    config.set("accesslog", "-")  # the Procfile's --access-logfile -
    server_log = Logger(config)  # gives gunicorn's loggers handlers of its own, as it does
    logs.configure()  # what the app factory then does in each gunicorn worker
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": "/receipts/verify?code=SECRET-CODE",
        "PATH_INFO": "/receipts/verify",
        "QUERY_STRING": "code=SECRET-CODE",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "192.0.2.7",
        "HTTP_REFERER": "https://portal.example/?code=SECRET-REFERRER",
        "HTTP_USER_AGENT": "agent/1.0",
    }
    response = SimpleNamespace(status="200 OK", headers=[("X-Request-ID", "abcdef12-3456")], sent=9)
    request = SimpleNamespace(headers=[("Cookie", "session=SECRET-COOKIE")])
    server_log.access(response, request, environ, timedelta(milliseconds=12))

    (line,) = [line for line in captured.lines() if line["logger"] == "gunicorn.access"]
    assert line["event"] == "GET /receipts/verify 200"
    assert (line["request_id"], line["duration_ms"]) == ("abcdef12-3456", 12)
    assert "SECRET" not in captured.stream.getvalue()
    assert "192.0.2.7" not in captured.stream.getvalue()
    assert not logging.getLogger("gunicorn.access").handlers


# -- a whole journey ----------------------------------------------------------------------------


class RecordingClient(FlaskClient):
    """A test client that notes what its person types into the secret fields, the tokens it
    sends, the cookies it is given and the ID of each request it makes."""

    secrets: set[str]
    request_ids: list[str]

    def open(self, *args: Any, **kwargs: Any) -> TestResponse:  # type: ignore[override]
        data = kwargs.get("data")
        if isinstance(data, dict):
            for name in TYPED_SECRETS:
                if data.get(name):
                    self.secrets.add(str(data[name]))
        authorization = dict(kwargs.get("headers") or {}).get("Authorization", "")
        if authorization:
            self.secrets.add(authorization.removeprefix("Bearer "))
        response = super().open(*args, **kwargs)
        for header in response.headers.getlist("Set-Cookie"):
            for morsel in SimpleCookie(header).values():
                if morsel.value:
                    self.secrets.add(morsel.value)
        self.request_ids.append(response.headers["X-Request-ID"])
        return response


def _browser(app: Flask, secrets: set[str], request_ids: list[str]) -> Browser:
    client = RecordingClient(app, app.response_class, use_cookies=True)
    client.secrets, client.request_ids = secrets, request_ids
    return Browser(client)


def _planted_dicom() -> tuple[bytes, set[str]]:
    """CT_small with identifying values planted in it; the values, to look for in the logs."""
    original = real_file("CT_small.dcm")
    dataset = pydicom.dcmread(io.BytesIO(original.content))
    for keyword, value in PLANTED.items():
        setattr(dataset, keyword, value)
    out = io.BytesIO()
    dataset.save_as(out)
    values = {*PLANTED.values(), *original.identifiers}
    values |= {part for value in PLANTED.values() for part in value.split("^")}
    return out.getvalue(), values


@contextmanager
def _serving(app: Flask) -> Iterator[str]:
    """The app behind werkzeug's own server (the development server's), on a free port."""
    server = make_server("127.0.0.1", 0, app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


def _fetch(url: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310 - our server
        return int(reply.status)


def test_a_whole_journey_logs_no_phi_password_token_cookie_or_code(
    app: Flask, published: None, make_user: Any, captured: Captured
) -> None:
    secrets: set[str] = set()
    request_ids: list[str] = []
    dicom, phi = _planted_dicom()

    donor = _browser(app, secrets, request_ids)
    assert donor.register("ada.donor@example.org", "donor pass phrase 1").status_code == 303
    signed = donor.sign_consent(name="Ada Plantedsigner")
    assert signed.status_code == 200
    code = SHOWN_CODE.search(signed.get_data(as_text=True)).group(1)
    secrets.add(code)
    uploaded = donor.upload([dicom])
    assert uploaded.status_code == 303
    donation = uploaded.headers["Location"]
    assert "Accepted" in donor.get(donation)
    assert donor.logout().status_code == 303

    make_user("grace.steward@example.org", "steward", "steward pass phrase 2")
    steward = _browser(app, secrets, request_ids)
    assert steward.login("grace.steward@example.org", "steward pass phrase 2").status_code == 303
    assert "Plantedsurname" not in steward.get("/steward/donations")
    action = f"/steward{donation}/decision"
    decided = steward.submit("/steward/donations", {"decision": "approve"}, action=action)
    assert decided.status_code == 303
    assert steward.logout().status_code == 303

    make_user("alan.researcher@example.org", "researcher", "researcher pass phrase 3")
    researcher = _browser(app, secrets, request_ids)
    wrong = researcher.login("alan.researcher@example.org", "a wrong pass phrase 4")
    assert wrong.status_code == 401
    assert (
        researcher.login("alan.researcher@example.org", "researcher pass phrase 3").status_code
        == 303
    )
    made = researcher.submit("/researcher/tokens", {"name": "script", "scopes": ["releases:read"]})
    token = SHOWN_TOKEN.search(made.get_data(as_text=True)).group(1)
    secrets.add(token)
    api = _browser(app, secrets, request_ids).client
    bearer = {"Authorization": f"Bearer {token}"}
    assert api.get("/api/releases", headers=bearer).status_code == 200
    assert (
        api.get("/api/releases", headers={"Authorization": f"Bearer {token}x"}).status_code == 401
    )

    # the development server writes a line per request, which must keep its secrets too
    session_cookie = researcher.client.get_cookie(app.config["SESSION_COOKIE_NAME"])
    assert session_cookie is not None
    with _serving(app) as base:
        assert _fetch(f"{base}/receipts/verify?code={code}", {}) == 200
        assert _fetch(f"{base}/api/releases?access_token={token}", bearer) == 200
        cookie = {"Cookie": f"{session_cookie.key}={session_cookie.value}"}
        assert _fetch(f"{base}/researcher/?session={session_cookie.value}", cookie) == 200
    assert researcher.logout().status_code == 303

    lines = captured.lines()
    # the capture saw every step: a line from each request made, and the servers' lines
    seen = {line.get("request_id") for line in lines}
    assert set(request_ids) <= seen, set(request_ids) - seen
    access = [line["event"] for line in lines if line["logger"] == "werkzeug"]
    assert access == ["GET /receipts/verify 200", "GET /api/releases 200", "GET /researcher/ 200"]
    assert any(line["event"] == "API token refused: unknown" for line in lines)
    emails = {"ada.donor@example.org", "grace.steward@example.org", "alan.researcher@example.org"}
    assert emails <= secrets and code in secrets and token in secrets
    assert session_cookie.value in secrets and "a wrong pass phrase 4" in secrets
    forbidden = secrets | phi | {token.removeprefix("dp_")}
    for line in lines:
        # every value but the time (whose digits could match a short code by chance)
        text = " ".join(str(value) for key, value in line.items() if key != "timestamp")
        leaked = sorted(value for value in forbidden if value in text)
        assert not leaked, (leaked, line)
        assert "@example.org" not in text, line


# -- the audit trail ----------------------------------------------------------------------------


def test_a_token_s_first_use_of_each_day_is_audited(
    app: Flask, make_user: Any, db_session: Session
) -> None:
    """Not every call: a script's thousands would bury the trail."""
    user = make_user("audited.researcher@example.org", "researcher")
    researcher = Browser(app.test_client())
    assert researcher.login("audited.researcher@example.org").status_code == 303
    made = researcher.submit("/researcher/tokens", {"name": "script", "scopes": ["releases:read"]})
    token = SHOWN_TOKEN.search(made.get_data(as_text=True)).group(1)
    api, bearer = app.test_client(), {"Authorization": f"Bearer {token}"}
    late = (datetime.now(UTC) + timedelta(days=1)).replace(hour=23, minute=59, second=30)
    # four calls in 50 s; the next day's first comes 40 s after the last recorded use (which
    # is written at most once a minute): audited all the same
    for seconds in (0, 20, 40, 50):
        moment = late + timedelta(seconds=seconds)
        app.extensions["portal_clock"] = lambda moment=moment: moment
        assert api.get("/api/releases", headers=bearer).status_code == 200

    entries = consents.audit.query(db_session, action="researcher.token_used")
    days = [late.date().isoformat(), (late + timedelta(days=1)).date().isoformat()]
    assert [entry.detail for entry in reversed(entries)] == [{"day": day} for day in days]
    assert {(entry.actor, entry.subject_type) for entry in entries} == {
        (f"user:{user.id}", "api_token")
    }
    assert token not in str([entry.subject_id for entry in entries])


# -- the workers ---------------------------------------------------------------------------------


@pytest.mark.filterwarnings(NOLOAD)
def test_a_job_logs_its_task_id_and_the_id_of_the_request_that_enqueued_it(
    stacks: Any,  # noqa: F811
) -> None:
    from donation_portal.adapters.models import Upload

    stack: Stack = stacks("sqla+sqlite")
    app = stack.app(JOBS_INLINE=False)
    dicom, phi = _planted_dicom()
    try:
        uploaded = donate_one(app, "logs-worker@example.org", dicom)
        assert uploaded.status_code == 303
        request_id = uploaded.headers["X-Request-ID"]
        engine = create_engine(stack.url)

        def ingested() -> list[dict[str, Any]]:
            with engine.connect() as conn:
                if conn.execute(select(Upload.state)).scalars().all() != ["done"]:
                    return []
            return [
                line
                for line in _json_lines(stack.worker.lines)
                if line.get("request_id") == request_id and "succeeded" in line["event"]
            ]

        try:
            (done,) = _poll(ingested, stack.worker, "the job's lines did not appear")
        finally:
            engine.dispose()
    finally:
        app.extensions["portal_engine"].dispose()
    assert done["task"] == "portal.ingest_upload" and done["task_id"] in done["event"]
    output = "\n".join(stack.worker.lines)
    leaked = sorted(value for value in phi | {"logs-worker@example.org"} if value in output)
    assert not leaked


def _json_lines(lines: list[str]) -> Iterator[dict[str, Any]]:
    """The worker's log lines (its stdout has the banner of the celery command too)."""
    for line in list(lines):
        if line.startswith("{"):
            yield json.loads(line)
