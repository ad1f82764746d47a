"""Security keys (WebAuthn), the second option beside an authenticator app (issue 12, point 1).

A software authenticator stands in for the key: an EC P-256 key pair that builds what a
browser and key send (clientDataJSON, authenticator data with the RP ID hash, flags, the
signature counter and, on registration, the credential's COSE public key under attestation
"none"; assertions signed over authData || SHA-256(clientDataJSON)). Everything goes through
the real endpoints, as the page's script does: fetch the options as JSON, answer them, submit
the answer in the form's ``credential`` field.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session
from webauthn.helpers import encode_cbor

from donation_portal.adapters.mfa_models import SecurityKey, SecurityKeyChallenge
from donation_portal.adapters.settings import ConfigError, load_settings, webauthn_origin
from donation_portal.web import sessions

from .conftest import PASSWORD, TOKEN, Browser, totp_code
from .test_mfa import mfa_actions

ORIGIN = "http://localhost"  # the test client's address: the relying party outside production
RECOVERY = re.compile(r"<li><code>([a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4})</code></li>")
FLAG_UP, FLAG_AT = 0x01, 0x40


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SoftKey:
    """A security key in software: registers itself, then signs with a counter that goes up
    by one per signature (unless told otherwise, to play a clone)."""

    def __init__(self) -> None:
        self.private = ec.generate_private_key(ec.SECP256R1())
        self.credential_id = os.urandom(32)
        self.counter = 0

    def create(self, options: dict[str, Any], origin: str = ORIGIN) -> str:
        assert options["attestation"] == "none"
        numbers = self.private.public_key().public_numbers()
        cose = encode_cbor(
            {
                1: 2,  # kty: EC2
                3: -7,  # alg: ES256
                -1: 1,  # crv: P-256
                -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big"),
            }
        )
        attested = bytes(16) + len(self.credential_id).to_bytes(2, "big") + self.credential_id
        auth_data = self._auth_data(options["rp"]["id"], FLAG_UP | FLAG_AT, 0) + attested + cose
        client_data = self._client_data("webauthn.create", options["challenge"], origin)
        attestation = encode_cbor({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return self._answer(
            {"clientDataJSON": b64url(client_data), "attestationObject": b64url(attestation)}
        )

    def get(self, options: dict[str, Any], origin: str = ORIGIN, counter: int | None = None) -> str:
        allowed = [unb64url(item["id"]) for item in options["allowCredentials"]]
        assert self.credential_id in allowed
        if counter is None:
            self.counter += 1
            counter = self.counter
        auth_data = self._auth_data(options["rpId"], FLAG_UP, counter)
        client_data = self._client_data("webauthn.get", options["challenge"], origin)
        signed = auth_data + hashlib.sha256(client_data).digest()
        signature = self.private.sign(signed, ec.ECDSA(hashes.SHA256()))
        return self._answer(
            {
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(auth_data),
                "signature": b64url(signature),
            }
        )

    @staticmethod
    def _auth_data(rp_id: str, flags: int, counter: int) -> bytes:
        rp_id_hash = hashlib.sha256(rp_id.encode("ascii")).digest()
        return rp_id_hash + bytes([flags]) + counter.to_bytes(4, "big")

    @staticmethod
    def _client_data(kind: str, challenge: str, origin: str) -> bytes:
        body = {"type": kind, "challenge": challenge, "origin": origin, "crossOrigin": False}
        return json.dumps(body).encode("utf-8")

    def _answer(self, response: dict[str, str]) -> str:
        credential_id = b64url(self.credential_id)
        return json.dumps(
            {
                "id": credential_id,
                "rawId": credential_id,
                "type": "public-key",
                "response": response,
                "clientExtensionResults": {},
            }
        )


def options(browser: Browser, page: str, url: str, status: int = 200) -> dict[str, Any]:
    """POST to an options endpoint as the page's script does (CSRF token in a header)."""
    html = browser.get(page)
    assert f'data-options-url="{url}"' in html
    reply = browser.client.post(
        url, headers={"X-CSRFToken": TOKEN.search(html).group(1), "Accept": "application/json"}
    )
    assert reply.status_code == status, reply.get_data(as_text=True)
    return reply.get_json()


def add_key(browser: Browser, key: SoftKey, name: str = "blue key", origin: str = ORIGIN):  # type: ignore[no-untyped-def]
    created = options(browser, "/account/two-factor", "/account/two-factor/keys/options")
    answer = key.create(created, origin)
    return browser.submit(
        "/account/two-factor",
        {"name": name, "credential": answer},
        action="/account/two-factor/keys",
    )


def sign_in(browser: Browser, email: str, key: SoftKey, **kw: Any):  # type: ignore[no-untyped-def]
    """Type the password, then answer the second step with ``key``."""
    reply = browser.submit("/login", {"email": email, "password": PASSWORD})
    assert reply.headers["Location"] == "/login/code"
    assert "Use security key" in browser.get("/login/code")
    answer = key.get(options(browser, "/login/code", "/login/code/key"), **kw)
    return browser.submit("/login/code", {"credential": answer})


def test_a_donor_registers_a_key_and_logs_in_with_it(
    app: Flask,
    browser: Browser,
    make_user,
    db_session: Session,  # type: ignore[no-untyped-def]
) -> None:
    make_user("donor@example.org", "donor")
    browser.login("donor@example.org")
    key = SoftKey()
    added = add_key(browser, key, "  blue\nkey  ")
    assert added.status_code == 200
    assert "Your security key is set up" in added.get_data(as_text=True)
    codes = RECOVERY.findall(added.get_data(as_text=True))
    assert len(codes) == 10  # the first second factor: recovery codes with it
    settings = browser.get("/account/two-factor")
    assert "<td>blue key</td>" in settings and "never" in settings
    stored = db_session.scalar(select(SecurityKey))
    assert stored.credential_id == key.credential_id and stored.sign_count == 0
    assert db_session.scalar(select(SecurityKeyChallenge)) is None  # answered: gone

    browser.logout()
    assert sign_in(browser, "donor@example.org", key).headers["Location"] == "/"
    db_session.expire_all()
    stored = db_session.scalar(select(SecurityKey))
    assert stored.sign_count == 1 and stored.last_used_at is not None

    browser.logout()
    browser.submit("/login", {"email": "donor@example.org", "password": PASSWORD})
    assert browser.submit("/login/code", {"code": "123456"}).status_code == 401  # no app
    assert browser.submit("/login/code", {"code": codes[0]}).status_code == 303
    assert mfa_actions(db_session) == [
        ("auth.mfa_enrolled", {"factor": "webauthn"}),
        ("auth.mfa_verified", {"factor": "webauthn"}),
        ("auth.mfa_failed", {"reason": "wrong-code"}),
        ("auth.mfa_verified", {"factor": "recovery-code"}),
    ]


def test_a_replayed_answer_and_a_clone_with_an_old_counter_are_refused(
    app: Flask,
    browser: Browser,
    make_user,
    db_session: Session,  # type: ignore[no-untyped-def]
) -> None:
    make_user("donor@example.org", "donor")
    browser.login("donor@example.org")
    key = SoftKey()
    add_key(browser, key)
    browser.logout()
    browser.submit("/login", {"email": "donor@example.org", "password": PASSWORD})
    answer = key.get(options(browser, "/login/code", "/login/code/key"))
    assert browser.submit("/login/code", {"credential": answer}).status_code == 303
    browser.logout()

    browser.submit("/login", {"email": "donor@example.org", "password": PASSWORD})
    replayed = browser.submit("/login/code", {"credential": answer})
    assert replayed.status_code == 401  # its challenge was answered already
    clone = key.get(options(browser, "/login/code", "/login/code/key"), counter=1)
    refused = browser.submit("/login/code", {"credential": clone})
    assert refused.status_code == 401
    assert "refused" in refused.get_data(as_text=True)
    assert browser.client.get("/donations/new").status_code == 302  # still not logged in
    assert mfa_actions(db_session)[-2:] == [
        ("auth.mfa_failed", {"reason": "stale-challenge", "factor": "webauthn"}),
        ("auth.mfa_failed", {"reason": "sign-count-not-increased", "factor": "webauthn"}),
    ]
    db_session.expire_all()
    assert db_session.scalar(select(SecurityKey)).sign_count == 1  # unchanged by the clone
    assert sign_in_after_password(browser, key).status_code == 303


def sign_in_after_password(browser: Browser, key: SoftKey):  # type: ignore[no-untyped-def]
    answer = key.get(options(browser, "/login/code", "/login/code/key"))
    return browser.submit("/login/code", {"credential": answer})


def test_an_answer_for_another_origin_is_refused(
    app: Flask,
    browser: Browser,
    make_user,
    db_session: Session,  # type: ignore[no-untyped-def]
) -> None:
    make_user("donor@example.org", "donor")
    browser.login("donor@example.org")
    phished = add_key(browser, SoftKey(), origin="https://portal.example.evil")
    assert phished.status_code == 303
    assert "could not be registered" in browser.get("/account/two-factor")
    assert db_session.scalar(select(SecurityKey)) is None

    key = SoftKey()
    assert add_key(browser, key).status_code == 200
    browser.logout()
    reply = sign_in(browser, "donor@example.org", key, origin="https://portal.example.evil")
    assert reply.status_code == 401
    assert mfa_actions(db_session)[-1] == (
        "auth.mfa_failed",
        {"reason": "invalid-response", "factor": "webauthn"},
    )
    assert sign_in_after_password(browser, key).headers["Location"] == "/"


def test_a_steward_is_let_in_by_a_key_and_cannot_remove_the_last_one(
    app: Flask,
    browser: Browser,
    make_user,
    db_session: Session,  # type: ignore[no-untyped-def]
) -> None:
    make_user("steward@example.org", "steward", second_factor=False)
    assert browser.login("steward@example.org").headers["Location"] == "/account/two-factor"
    assert browser.client.get("/steward/").headers["Location"] == "/account/two-factor"
    key = SoftKey()
    assert add_key(browser, key).status_code == 200
    assert browser.client.get("/steward/").status_code == 200
    browser.logout()
    assert sign_in(browser, "steward@example.org", key).headers["Location"] == "/steward/"
    assert browser.client.get("/steward/").status_code == 200

    key_id = db_session.scalar(select(SecurityKey.id))
    path, form = "/account/two-factor/keys/remove", {"key": str(key_id)}
    assert browser.submit("/account/two-factor", form, action=path).status_code == 303
    assert "needs a second factor" in browser.get("/account/two-factor")
    browser.submit("/account/two-factor", {"key": str(2**40)}, action=path)
    assert "no such security key" in browser.get("/account/two-factor")
    assert db_session.scalar(select(SecurityKey.id)) == key_id

    second = SoftKey()
    assert add_key(browser, second, "spare").status_code == 303  # no new recovery codes
    assert browser.submit("/account/two-factor", form, action=path).status_code == 303
    assert "is removed" in browser.get("/account/two-factor")
    db_session.expire_all()
    assert [k.name for k in db_session.scalars(select(SecurityKey))] == ["spare"]


def test_step_up_with_a_key(
    app: Flask,
    browser: Browser,
    make_user,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    make_user("researcher@example.org", "researcher")
    browser.login("researcher@example.org")
    key = SoftKey()
    assert add_key(browser, key).status_code == 303  # the app was typed a moment ago
    later = sessions.now() + 6 * 60
    monkeypatch.setattr(sessions, "now", lambda: later)

    asked = browser.submit("/account/two-factor", {}, action="/account/two-factor/recovery-codes")
    assert asked.headers["Location"] == "/account/confirm?next=/account/two-factor"
    assert "Use security key" in browser.get("/account/confirm?next=/account/two-factor")
    # adding another key needs the step-up too: the script is told 401, and goes there
    options(browser, "/account/two-factor", "/account/two-factor/keys/options", status=401)
    answer = key.get(
        options(browser, "/account/confirm?next=/account/two-factor", "/account/confirm/key")
    )
    confirmed = browser.submit(
        "/account/confirm?next=/account/two-factor",
        {"credential": answer},
    )
    assert confirmed.headers["Location"] == "/account/two-factor"
    renewed = browser.submit("/account/two-factor", {}, action="/account/two-factor/recovery-codes")
    assert renewed.status_code == 200
    assert len(RECOVERY.findall(renewed.get_data(as_text=True))) == 10


def test_key_options_need_a_half_finished_login_and_an_old_challenge_expires(
    app: Flask,
    browser: Browser,
    make_user,
    monkeypatch: pytest.MonkeyPatch,
    db_session: Session,  # type: ignore[no-untyped-def]
) -> None:
    page = browser.get("/login")
    token = TOKEN.search(page).group(1)
    anonymous = browser.client.post("/login/code/key", headers={"X-CSRFToken": token})
    assert anonymous.status_code == 409

    make_user("admin@example.org", "admin")
    browser.login("admin@example.org")
    key = SoftKey()
    add_key(browser, key)
    browser.logout()
    browser.submit("/login", {"email": "admin@example.org", "password": PASSWORD})
    answer = key.get(options(browser, "/login/code", "/login/code/key"))
    later = sessions.now() + 3 * 60  # past the challenge's two minutes, within the login's five
    monkeypatch.setattr(sessions, "now", lambda: later)
    assert browser.submit("/login/code", {"credential": answer}).status_code == 401
    assert (
        browser.submit("/login/code", {"code": totp_code("admin@example.org")}).status_code == 303
    )
    assert mfa_actions(db_session)[-2][1] == {"reason": "stale-challenge", "factor": "webauthn"}


@pytest.mark.parametrize(
    ("environ", "refused"),
    [
        ({"PORTAL_PUBLIC_URL": "https://portal.example.org/x"}, False),
        (
            {
                "PORTAL_WEBAUTHN_ORIGIN": "https://portal.example.org",
                "PORTAL_WEBAUTHN_RP_ID": "example.org",
            },
            False,
        ),
        (
            {
                "PORTAL_PUBLIC_URL": "https://portal.example.org",
                "PORTAL_WEBAUTHN_RP_ID": "evil.org",
            },
            True,
        ),
        ({"PORTAL_WEBAUTHN_ORIGIN": "portal.example.org"}, True),
    ],
)
def test_a_relying_party_id_the_origin_is_not_under_refuses_to_start(
    tmp_path: Path, environ: dict[str, str], refused: bool
) -> None:
    environ = {"PORTAL_ENV": "test", **environ}
    if refused:
        with pytest.raises(ConfigError, match="WEBAUTHN"):
            load_settings(tmp_path, environ=environ)
    else:
        assert webauthn_origin(load_settings(tmp_path, environ=environ)) == (
            "https://portal.example.org"
        )
