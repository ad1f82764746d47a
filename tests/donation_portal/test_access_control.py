"""Access control (issue 12, point 8): every endpoint declares who may call it, and does so.

The inventory walks ``app.url_map``: an endpoint whose view declares nothing (with the
decorators of ``web.security``) fails it, unless it is in ``UNDECLARED`` with a reason.

The matrix is generated from the declarations, so a new endpoint is covered as soon as it
declares. Each route, its URL filled in with real objects of a small world (two donors, two
researchers, a steward, an admin, a release and its withdrawal notice), is called with each
of its methods by each caller, and must answer what the declaration implies:

- ``allowed``: not refused (not sent to log in, no 403 or 404) and no server error;
- ``login``: a caller who is not logged in is sent to log in (a redirect to /login from a
  page; a 401 problem from the API and tus, which answer programs). The API takes no login
  cookie, so every session caller gets 401 there; its callers are bearer tokens;
- ``forbidden``: a caller whose role (or token scope) the declaration does not name gets 403;
- ``hidden``: in a view open to the role of an object's owner, any other caller gets 404:
  the portal does not reveal that another donor's donation or upload, or another
  researcher's release, notice or token, exists. (Staff views are open to other roles
  than the owners' and reach every object.)

Every request carries a valid CSRF token (the ``X-CSRFToken`` header), so a refusal is the
authorisation's, not the CSRF check's. Bodies are empty: an allowed POST mostly fails its
form's validation and changes little. There is no receipt endpoint to test: a donor's
receipts are handed over inline when issued and never stored (``web.receipt_pages``).
"""

from __future__ import annotations

import base64
import io
import secrets
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.routing import Rule
from werkzeug.test import TestResponse

from consent.db import utcnow
from donation_portal.adapters.models import (
    AccessRequest,
    DonatedFile,
    Donation,
    LoginSession,
    Release,
    RequestApproval,
    User,
    WithdrawalAcknowledgement,
    WithdrawalNotice,
)
from donation_portal.web.security import Access, access_of
from donation_portal.workflows import tokens

from .conftest import PASSWORD, TOKEN, Browser
from .research.test_end_to_end import CT, ETHICS, MR, _keygen

# Endpoints that are not the portal's views, each with why it needs no declaration.
UNDECLARED = {
    "static": "Flask's own view of the files in web/static (styles, scripts): anyone may read",
}

ALLOWED, LOGIN, FORBIDDEN, HIDDEN = "allowed", "login", "forbidden", "hidden"
TUS = {"Tus-Resumable": "1.0.0"}  # without it tus answers 412 before checking who calls
# What a tus client sends with every request, so that a call gets past the protocol checks
# to the one of who calls (a PATCH of another type is refused before the upload is looked up).
TUS_CLIENT = {**TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}


@dataclass(frozen=True)
class Caller:
    """Who calls: a browser with a login cookie (or none), or a script with an API token."""

    name: str
    role: str | None  # None: not logged in
    owner: str | None = None  # the session caller whose objects this caller owns (tokens)
    token: str | None = None  # "with scope" or "without scope": the token's scope for the call

    @property
    def identity(self) -> str:
        return self.owner or self.name


# "donor" owns the donation, file, consent and upload; "researcher" owns the request, release,
# notice and token. Their "other" namesakes have the same role and own none of them.
SESSION_CALLERS = [
    Caller("anonymous", None),
    Caller("donor", "donor"),
    Caller("other donor", "donor"),
    Caller("researcher", "researcher"),
    Caller("other researcher", "researcher"),
    Caller("steward", "steward"),
    Caller("admin", "admin"),
]
TOKEN_CALLERS = [
    Caller("researcher's token", "researcher", owner="researcher", token="with scope"),
    Caller("researcher's token without the scope", "researcher", "researcher", "without scope"),
    Caller("other researcher's token", "researcher", "other researcher", "with scope"),
]
# Which caller owns the object each URL parameter names (absent: no caller). A view open to
# the owner's role serves each of its users their own objects only: the others get 404. Staff
# views take donors' and researchers' objects without that (their roles are not the owner's).
OWNERS = {
    "donation_id": "donor",
    "file_id": "donor",
    "consent_id": "donor",
    "upload_id": "donor",
    "request_id": "researcher",
    "release_id": "researcher",
    "notice_id": "researcher",
    "token_id": "researcher",
}
LAST = ("auth.logout",)  # ends the session every later request of its caller needs

# The cases issue 12 names: the generated matrix must hold each, with this outcome.
NAMED_CASES = [
    ("other donor", "GET", "donor.donation", HIDDEN),
    ("other donor", "GET", "donor.donation_status", HIDDEN),
    ("other donor", "HEAD", "tus.resume", HIDDEN),
    ("other donor", "PATCH", "tus.append", HIDDEN),
    ("other donor", "DELETE", "tus.terminate", HIDDEN),
    ("donor", "GET", "donor.donation", ALLOWED),
    ("donor", "HEAD", "tus.resume", ALLOWED),
    ("donor", "POST", "steward.decide_donation", FORBIDDEN),
    ("donor", "POST", "steward.decide_file", FORBIDDEN),
    ("donor", "POST", "steward.acknowledge", FORBIDDEN),
    ("donor", "POST", "research_steward.decide", FORBIDDEN),
    ("donor", "GET", "steward.consent_fhir", FORBIDDEN),
    ("researcher", "GET", "steward.consents", FORBIDDEN),
    ("researcher", "GET", "research_steward.queue", FORBIDDEN),
    ("researcher", "GET", "research_steward.ethics_document", FORBIDDEN),
    ("researcher", "POST", "research_steward.decide", FORBIDDEN),
    ("steward", "GET", "research.download", FORBIDDEN),
    ("steward", "POST", "research.new_request", FORBIDDEN),
    ("steward", "POST", "research.new_token", FORBIDDEN),
    ("steward", "POST", "researcher.acknowledge_notice", FORBIDDEN),
    ("steward", "GET", "research_steward.all_tokens", FORBIDDEN),
    ("steward", "POST", "tus.create", FORBIDDEN),
    ("steward", "GET", "research_api.list_releases", LOGIN),
    ("other researcher", "GET", "research.download", HIDDEN),
    ("other researcher", "POST", "researcher.acknowledge_notice", HIDDEN),
    ("other researcher", "POST", "research.revoke_token", HIDDEN),
    ("other researcher's token", "GET", "research_api.manifest", HIDDEN),
    ("researcher's token without the scope", "GET", "research_api.manifest", FORBIDDEN),
    ("anonymous", "POST", "steward.decide_donation", LOGIN),
    ("anonymous", "POST", "tus.create", LOGIN),
]


@dataclass
class World:
    """The callers' browsers with their CSRF tokens, API tokens by caller and scope, and the
    objects URL parameters are filled with."""

    app: Flask
    browsers: dict[str, Browser]
    csrf: dict[str, str]
    api_tokens: dict[tuple[str, str], str]
    ids: dict[str, str | int]
    pending_request: str  # the other researcher's, not decided yet


@dataclass(frozen=True)
class Case:
    endpoint: str
    method: str
    path: str
    caller: Caller
    expected: str

    def __str__(self) -> str:
        return f"{self.method} {self.path} ({self.endpoint}) as {self.caller.name}"


def _user(db_session: Session, email: str) -> User:
    return db_session.scalars(select(User).where(User.email == email)).one()


def _login(app: Flask, make_user, email: str, role: str) -> Browser:  # type: ignore[no-untyped-def]
    make_user(email, role)
    browser = Browser(app.test_client())
    assert browser.login(email, PASSWORD).status_code == 303
    return browser


def _donor(app: Flask, email: str, content: bytes | None) -> Browser:
    donor = Browser(app.test_client())
    assert donor.register(email).status_code == 303
    assert donor.sign_consent().status_code == 200
    if content is not None:
        assert donor.upload([content]).status_code == 303
    return donor


def _researcher(app: Flask, make_user, home: Path, name: str) -> Browser:  # type: ignore[no-untyped-def]
    browser = _login(app, make_user, f"{name}@example.org", "researcher")
    _, public_key = _keygen(home, name)
    profile = {"affiliation": f"{name} lab", "public_key": public_key.read_text()}
    assert browser.submit("/researcher/profile", profile).status_code == 303
    return browser


def _open_upload(donor: Browser) -> str:
    """A tus upload of the donor's, created and left open."""
    csrf = TOKEN.search(donor.get("/donations/new")).group(1)
    meta = "submission " + base64.b64encode(secrets.token_hex(16).encode()).decode()
    headers = {**TUS, "X-CSRFToken": csrf, "Upload-Length": "1000", "Upload-Metadata": meta}
    created = donor.client.post("/uploads/", headers=headers)
    assert created.status_code == 201, created.get_data(as_text=True)
    return created.headers["Location"].rsplit("/", 1)[1]


def _request(researcher: Browser, db_session: Session, email: str) -> AccessRequest:
    """An access request of the researcher's, with an ethics approval document."""
    form = {
        "title": "Lung nodules",
        "abstract": "A study of lung imaging data.",
        "purpose": "health",
        "publishes": "yes",
        "action": "submit",
        "ethics": (io.BytesIO(ETHICS), "approval.pdf"),
    }
    assert researcher.submit("/researcher/requests/new", form).status_code == 303
    query = select(AccessRequest).where(AccessRequest.researcher_id == _user(db_session, email).id)
    return db_session.scalars(query).one()


def _decide(steward: Browser, action: str, **decision: str) -> None:
    assert steward.submit("/", decision, action=action).status_code == 303


def _donation(db_session: Session, email: str) -> Donation:
    query = select(Donation).where(Donation.donor_id == _user(db_session, email).id)
    return db_session.scalars(query).one()


def _api_tokens(researcher: User, other: User, db_session: Session) -> dict[tuple[str, str], str]:
    """For each scope, each token caller's token: the researcher's granting just that scope,
    theirs granting every other one, and the other researcher's granting them all."""
    made = {}
    for scope in tokens.SCOPES:
        for caller, owner, scopes in (
            ("researcher's token", researcher, {scope}),
            ("researcher's token without the scope", researcher, set(tokens.SCOPES) - {scope}),
            ("other researcher's token", other, set(tokens.SCOPES)),
        ):
            made[caller, scope], _ = tokens.issue(db_session, owner, caller, scopes, 30, utcnow())
    return made


@pytest.fixture
def world(app: Flask, make_user, db_session: Session, tmp_path: Path, published: None) -> World:  # type: ignore[no-untyped-def]
    """Donor "donor" with a donation awaiting review and an open tus upload; a released donor
    who withdrew after the release; "researcher" with an approved request (with its ethics
    document), its release and withdrawal notice, and a token to revoke; "other researcher"
    with a request awaiting a decision; and the others."""
    app.config.update(  # the matrix logs in and posts /login, /register and /withdraw a lot
        RESEARCH_FOUR_EYES=False,
        LOGIN_RATE_LIMIT="1000 per minute",
        WITHDRAW_RATE_LIMIT="1000 per minute",
    )
    browsers = {
        "anonymous": Browser(app.test_client()),
        "donor": _donor(app, "donor@example.org", CT),
        "other donor": _donor(app, "other-donor@example.org", None),
        "steward": _login(app, make_user, "steward@example.org", "steward"),
        "admin": _login(app, make_user, "admin@example.org", "admin"),
        "researcher": _researcher(app, make_user, tmp_path, "researcher"),
        "other researcher": _researcher(app, make_user, tmp_path, "other-researcher"),
    }
    steward = browsers["steward"]
    released = _donor(app, "released@example.org", MR)
    donation = _donation(db_session, "released@example.org")
    _decide(steward, f"/steward/donations/{donation.id}/decision", decision="approve")
    access = _request(browsers["researcher"], db_session, "researcher@example.org")
    expires = (date.today() + timedelta(days=30)).isoformat()
    _decide(steward, f"/steward/requests/{access.id}/decision", decision="approve", expires=expires)
    release = db_session.scalars(select(Release).where(Release.request_id == access.id)).one()
    pending = _request(browsers["other researcher"], db_session, "other-researcher@example.org")
    withdrawal = {"confirm": "yes", "scope": "all", "mode": "stop_use"}
    assert released.submit("/consent/withdraw", withdrawal).status_code == 200
    notice = db_session.scalars(select(WithdrawalNotice)).one()

    researcher = _user(db_session, "researcher@example.org")
    other = _user(db_session, "other-researcher@example.org")
    _, revocable = tokens.issue(
        db_session, researcher, "revocable", ["releases:read"], 30, utcnow()
    )
    owned = _donation(db_session, "donor@example.org")
    bystander = donation.donor_id  # no caller logs in as the released donor: safe to disable
    ids: dict[str, str | int] = {
        "donation_id": owned.id,
        "file_id": owned.files[0].id,
        "consent_id": owned.consent_id,
        "upload_id": _open_upload(browsers["donor"]),
        "request_id": access.id,
        "release_id": release.id,
        "position": release.items[0].position,
        "notice_id": notice.id,
        "token_id": revocable.id,
        "event_id": notice.event_id,
        "user_id": bystander,
        # ending another user's login answers as for one ended already: no 404 to expect
        "session_id": db_session.scalars(
            select(LoginSession.id).where(LoginSession.user_id == bystander)
        ).one(),
    }
    csrf = {name: TOKEN.search(b.get("/login")).group(1) for name, b in browsers.items()}
    api_tokens = _api_tokens(researcher, other, db_session)
    return World(app, browsers, csrf, api_tokens, ids, pending.id)


def _methods(rule: Rule) -> list[str]:
    """The methods the route's view answers: not the HEAD Werkzeug adds to a GET, nor the
    OPTIONS Flask answers itself."""
    automatic = {"HEAD"} if "GET" in rule.methods else set()
    if getattr(rule, "provide_automatic_options", False):
        automatic.add("OPTIONS")
    return sorted(rule.methods - automatic)


def _expected(access: Access, caller: Caller, parameters: set[str]) -> str:
    """The outcome ``access`` implies for ``caller`` on a URL naming ``parameters``."""
    if access.anonymous:
        return ALLOWED
    if access.scope is not None and caller.token is None:
        return LOGIN  # the API takes a bearer token only, never a login cookie
    if caller.role is None:
        return LOGIN
    if caller.role not in access.roles or caller.token == "without scope":
        return FORBIDDEN
    others = {OWNERS[p] for p in parameters if p in OWNERS} - {caller.identity}
    if any(_role(owner) in access.roles for owner in others):
        return HIDDEN
    return ALLOWED


def _role(name: str) -> str | None:
    return next(c.role for c in SESSION_CALLERS if c.name == name)


def matrix(world: World) -> list[Case]:
    """Every route × method × caller, with the outcome its declaration implies; the API's
    routes also for the token callers. A route that declares nothing is left to the
    inventory test, which fails for it."""
    app, cases = world.app, []
    rules = [r for r in app.url_map.iter_rules() if r.endpoint not in UNDECLARED]
    rules.sort(key=lambda r: (r.endpoint in LAST, r.endpoint, r.rule))
    for rule in rules:
        access = access_of(app.view_functions[rule.endpoint])
        if access is None:
            continue
        missing = set(rule.arguments) - set(world.ids)
        assert not missing, f"{rule.rule}: add an object for {sorted(missing)} to the world"
        path = rule.build({name: world.ids[name] for name in rule.arguments})[1]
        callers = SESSION_CALLERS + (TOKEN_CALLERS if access.scope is not None else [])
        for method in _methods(rule):
            for caller in callers:
                expected = _expected(access, caller, set(rule.arguments))
                cases.append(Case(rule.endpoint, method, path, caller, expected))
    return cases


def call(world: World, case: Case) -> TestResponse:
    """``case``'s request: a token caller's from a client without cookies; a session caller's
    from its browser, with its CSRF token. The body is read: a streamed one (a tar) would
    otherwise keep its request's context, and the user logged in there, for the next call."""
    caller = case.caller
    client: FlaskClient
    if caller.token is None:
        client = world.browsers[caller.name].client
        protocol = TUS_CLIENT if case.endpoint.startswith("tus.") else {}
        headers = {**protocol, "X-CSRFToken": world.csrf[caller.name]}
    else:
        access = access_of(world.app.view_functions[case.endpoint])
        assert access is not None and access.scope is not None
        client = world.app.test_client()
        headers = {"Authorization": f"Bearer {world.api_tokens[caller.name, access.scope]}"}
    response = client.open(case.path, method=case.method, headers=headers)
    response.get_data()
    response.close()
    return response


def outcome(response: TestResponse) -> str:
    """What ``response`` amounts to. Being sent to log in is, from a page, a redirect to the
    login page naming the page to come back to (logging out ends on the login page too); from
    the API and tus, which answer programs, a 401 problem. A 401 page is a form refusing the
    password or code typed into it: its caller got through to the view."""
    status, location = response.status_code, urlsplit(response.location or "")
    if status == 401 and response.mimetype == "application/problem+json":
        return LOGIN
    if location.path == "/login" and "next=" in location.query:
        return LOGIN
    if status in (403, 404):
        return {403: FORBIDDEN, 404: HIDDEN}[status]
    if status >= 500:
        return f"server error {status}"
    return ALLOWED


def test_every_endpoint_declares_who_may_call_it(app: Flask) -> None:
    undeclared = sorted(
        f"{endpoint} ({', '.join(sorted(r.rule for r in app.url_map.iter_rules(endpoint)))})"
        for endpoint, view in app.view_functions.items()
        if endpoint not in UNDECLARED and access_of(view) is None
    )
    assert not undeclared, (
        "endpoints without a declaration of who may call them (use public, logged_in, "
        "role_required, ... from donation_portal.web.security): " + "; ".join(undeclared)
    )
    assert set(UNDECLARED) <= set(app.view_functions), "UNDECLARED names an endpoint gone"


def test_every_endpoint_answers_every_caller_as_it_declares(world: World) -> None:
    cases = matrix(world)
    generated = {(c.caller.name, c.method, c.endpoint): c.expected for c in cases}
    for caller, method, endpoint, expected in NAMED_CASES:
        assert generated.get((caller, method, endpoint)) == expected, (caller, method, endpoint)
    wrong = []
    for case in cases:
        got = outcome(response := call(world, case))
        if got != case.expected:
            wrong.append(f"{case}: expected {case.expected}, got {got} ({response.status_code})")
    assert not wrong, f"{len(wrong)} of {len(cases)} calls:\n" + "\n".join(wrong)


def test_a_donor_posting_steward_decisions_changes_nothing(
    world: World, db_session: Session
) -> None:
    """Whole, valid decision forms, not empty ones: refused all the same, and nothing moved."""
    donor, ids, pending = world.browsers["donor"], world.ids, world.pending_request
    expires = (date.today() + timedelta(days=30)).isoformat()
    posts = {
        f"/steward/donations/{ids['donation_id']}/decision": {"decision": "approve"},
        f"/steward/files/{ids['file_id']}/decision": {"decision": "approve"},
        f"/steward/requests/{pending}/decision": {"decision": "approve", "expires": expires},
        f"/steward/withdrawals/{ids['event_id']}/acknowledge": {},
    }
    db_session.expire_all()
    before = (
        db_session.get(Donation, ids["donation_id"]).review_status,
        db_session.get(DonatedFile, ids["file_id"]).status,
    )
    for action, decision in posts.items():
        assert donor.submit("/", decision, action=action).status_code == 403, action
    db_session.expire_all()
    after = (
        db_session.get(Donation, ids["donation_id"]).review_status,
        db_session.get(DonatedFile, ids["file_id"]).status,
    )
    assert after == before
    assert db_session.get(AccessRequest, pending).decided_at is None
    approvals = select(RequestApproval).where(RequestApproval.request_id == pending)
    assert db_session.scalars(approvals).all() == []
    assert db_session.scalars(select(WithdrawalAcknowledgement)).all() == []
