"""A browser-like driver of the real routes: it reads CSRF tokens from the pages it gets."""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyotp
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.test import TestResponse, encode_multipart

from consent import default_template_spec, publish_template
from donation_portal.adapters import mail
from donation_portal.adapters.models import User
from donation_portal.web import sessions
from donation_portal.workflows import accounts, mfa

SECOND_FACTORS: dict[str, str] = {}  # e-mail: TOTP secret of the accounts make_user enrolled
_LAST_STEPS: dict[str, int] = {}  # TOTP secret: the time step of the code typed last
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
SUBMISSION = re.compile(r'name="submission_key" value="([0-9a-f]{32})"')
TEMPLATE = re.compile(r'name="template_id" value="([0-9a-f]{64})"')
PASSWORD = "correct horse battery"
CONFIRM_LINK = re.compile(r"/register/confirm#([A-Za-z0-9_-]+)")


@dataclass
class Browser:
    client: FlaskClient

    def get(self, path: str, status: int = 200) -> str:
        response = self.client.get(path)
        assert response.status_code == status, response.get_data(as_text=True)[:2000]
        return response.get_data(as_text=True)

    def submit(self, page_path: str, data: dict, action: str | None = None, **kw) -> TestResponse:
        """GET the page holding the form, then POST it with the page's CSRF token."""
        page = self.client.get(page_path, follow_redirects=True).get_data(as_text=True)
        match = TOKEN.search(page)
        assert match, f"no CSRF token on {page_path}"
        form = {"csrf_token": match.group(1), **data}
        scheme = self.client.environ_base.get("wsgi.url_scheme", "http")
        headers = {"Referer": f"{scheme}://localhost{page_path}"}  # as a browser sends it
        return self.client.post(action or page_path, data=form, headers=headers, **kw)

    def register(self, email: str, password: str = PASSWORD) -> TestResponse:
        """Register, then confirm with the link the app e-mailed: the confirmation's answer
        (a 303 to the consent page, logged in). The registration's own answer if it was
        refused, or sent no link (the address has an account)."""
        folder = Path(self.client.application.config["MAIL_DIR"])
        before = {message.name for message in mail.read_folder(folder)}
        data = {"email": email, "password": password, "password_confirm": password}
        response = self.submit("/register", data)
        links = [
            CONFIRM_LINK.search(message.body)
            for message in mail.read_folder(folder)
            if message.name not in before and message.to == accounts.normalise_email(email)
        ]
        token = next((link.group(1) for link in links if link is not None), None)
        if response.status_code != 200 or token is None:
            return response
        return self.submit("/register/confirm", {"token": token, "password": password})

    def login(self, email: str, password: str = PASSWORD) -> TestResponse:
        """Log in; for an account enrolled by ``make_user``, type the app's code as well."""
        response = self.submit("/login", {"email": email, "password": password})
        if response.status_code == 303 and response.headers["Location"] == "/login/code":
            return self.submit("/login/code", {"code": totp_code(email)})
        return response

    def logout(self) -> TestResponse:
        return self.submit("/", {}, action="/logout")

    def sign_consent(
        self, modules: Iterable[str] = ("research",), name: str = "Ada Donor"
    ) -> TestResponse:
        page = self.get("/consent")
        template_id = TEMPLATE.search(page).group(1)
        return self.client.post(
            "/consent",
            data={
                "csrf_token": TOKEN.search(page).group(1),
                "template_id": template_id,
                "modules": list(modules),
                "full_name": name,
            },
        )

    def upload_form(self) -> tuple[str, str]:
        page = self.get("/donations/new")
        return TOKEN.search(page).group(1), SUBMISSION.search(page).group(1)

    def upload(
        self, files: list[bytes], token_and_key: tuple[str, str] | None = None
    ) -> TestResponse:
        """POST the upload form. The body is built in memory, as a browser sends it: the test
        client would otherwise spool a large body to a plaintext temporary file of its own."""
        token, key = token_and_key or self.upload_form()
        fields = MultiDict({"csrf_token": token, "submission_key": key})
        for index, content in enumerate(files):
            fields.add("files", FileStorage(io.BytesIO(content), f"IM{index:06d}"))
        boundary, body = encode_multipart(fields)
        return self.client.post(
            "/donations/new",
            data=body,
            content_type=f"multipart/form-data; boundary={boundary}",
        )


@pytest.fixture
def published(db_session: Session) -> None:
    publish_template(db_session, default_template_spec())
    db_session.commit()


@pytest.fixture
def browser(client: FlaskClient, published: None) -> Browser:
    return Browser(client)


def totp_code(email: str) -> str:
    """A code of the app that ``make_user`` enrolled for ``email``, as its owner types it.

    The server takes a code one step either side of now, each step once: this hands out the
    earliest step not yet used from now on, so a test can log one account in twice in 30
    seconds. Never the step before now: the server may check it after the clock has passed
    into the next step, when that one is out of its window.
    """
    secret = SECOND_FACTORS[accounts.normalise_email(email)]
    now_step = sessions.now() // mfa.STEP_SECONDS
    step = max(now_step, _LAST_STEPS.get(secret, -1) + 1)
    assert step <= now_step + mfa.DRIFT_STEPS, f"no unused TOTP code left for {email} this step"
    _LAST_STEPS[secret] = step
    return pyotp.TOTP(secret).at(step * mfa.STEP_SECONDS)


def enrol_totp(app: Flask, session: Session, user: User) -> str:
    """Give ``user`` a confirmed authenticator app; returns its secret."""
    key = mfa.seal_key(app.config["SECRET_KEY"].encode("utf-8"))
    secret = mfa.enrol_without_code(session, user, key=key, at=sessions.now())
    SECOND_FACTORS[user.email] = secret
    return secret


@pytest.fixture
def make_user(app: Flask, db_session: Session):  # type: ignore[no-untyped-def]
    """Create an account; stewards, admins and researchers get an authenticator app too
    (``second_factor=False``: not, to test enrolment)."""

    def make(email: str, role: str, password: str = PASSWORD, *, second_factor: bool = True):  # type: ignore[no-untyped-def]
        user = accounts.create_user(db_session, email, password, role)
        db_session.commit()
        if second_factor and role != "donor":
            enrol_totp(app, db_session, user)
        return user

    return make


@pytest.fixture
def donor(browser: Browser) -> Browser:
    """A registered, logged-in donor who has signed the consent."""
    assert browser.register("donor@example.org").status_code == 303
    assert browser.sign_consent().status_code == 200
    return browser
