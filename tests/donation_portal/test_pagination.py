"""Every list is read a page at a time (issue 12, point 6): web pages take ``?page`` and
``?per_page`` and link to the previous and next pages, the API answers with ``Link`` and
``X-Total-Count`` headers, and schemas refuse lists longer than their cap with a 422.

Rows are inserted directly (through the models and use cases), many more than one page.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from consent import Consent, default_template_spec, publish_template
from donation_portal.adapters.models import AccessRequest, Donation, User
from donation_portal.web.pagination import DEFAULT_PER_PAGE, MAX_PER_PAGE
from donation_portal.workflows import tokens

from .conftest import PASSWORD, Browser

MakeUser = Callable[..., User]
START = datetime(2026, 1, 1, tzinfo=UTC)
TITLE = re.compile(r"Request (\d{3})")
ROWS = DEFAULT_PER_PAGE + 15  # two pages at the default size


def _login(app: Flask, make_user: MakeUser, email: str, role: str) -> tuple[Browser, User]:
    user = make_user(email, role)
    browser = Browser(app.test_client())
    assert browser.login(email, PASSWORD).status_code == 303
    return browser, user


def _requests(db_session: Session, researcher: User, count: int = ROWS) -> None:
    """``count`` submitted requests, "Request 000" the oldest."""
    db_session.add_all(
        AccessRequest(
            id=f"req-{index:03d}",
            researcher_id=researcher.id,
            title=f"Request {index:03d}",
            abstract="A study of lung imaging data.",
            use={"purpose": "health"},
            filters={},
            status="submitted",
            created_at=START + timedelta(minutes=index),
        )
        for index in range(count)
    )
    db_session.commit()


def _titles(page: str) -> list[int]:
    return [int(number) for number in TITLE.findall(page)]


def _bearer(app: Flask, db_session: Session, researcher: User) -> dict[str, str]:
    token, _ = tokens.issue(db_session, researcher, "script", tokens.SCOPES, 30, datetime.now(UTC))
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def queue(app: Flask, make_user: MakeUser, db_session: Session) -> Browser:
    """A steward, and ROWS requests waiting for a decision."""
    researcher = make_user("researcher@example.org", "researcher")
    _requests(db_session, researcher)
    steward, _ = _login(app, make_user, "steward@example.org", "steward")
    return steward


def test_the_request_queue_is_shown_a_page_at_a_time_with_links(queue: Browser) -> None:
    first = queue.get("/steward/requests/")
    assert _titles(first) == list(range(DEFAULT_PER_PAGE))  # the longest waiting first
    assert f"Page 1 of 2 ({ROWS} in all)" in first
    assert 'href="/steward/requests/?page=2"' in first
    assert 'rel="prev"' not in first
    second = queue.get("/steward/requests/?page=2")
    assert _titles(second) == list(range(DEFAULT_PER_PAGE, ROWS))
    assert 'href="/steward/requests/?page=1"' in second
    assert 'rel="next"' not in second


def test_the_page_length_is_chosen_up_to_a_cap_and_kept_in_the_links(queue: Browser) -> None:
    page = queue.get("/steward/requests/?per_page=10&page=3")
    assert _titles(page) == list(range(20, 30))
    assert "Page 3 of 7" in page
    assert "per_page=10" in re.search(r'href="([^"]*)">Next', page).group(1)
    everything = queue.get(f"/steward/requests/?per_page={MAX_PER_PAGE * 100}")
    assert _titles(everything) == list(range(ROWS))  # under the cap of MAX_PER_PAGE
    assert "Page 1 of" not in everything  # one page: no pager


@pytest.mark.parametrize(
    ("page", "shown"),
    [
        ("0", 1),
        ("-4", 1),
        ("abc", 1),
        ("1.5", 1),
        ("", 1),
        ("3", 2),  # past the last: the last
        ("9" * 30, 2),  # past any database integer
        ("9" * 5000, 1),  # too long to be read as a number: as if not given
    ],
)
def test_a_bad_page_number_shows_the_nearest_page(queue: Browser, page: str, shown: int) -> None:
    found = queue.get(f"/steward/requests/?page={page}")
    assert f"Page {shown} of 2" in found
    assert _titles(found)[0] == (shown - 1) * DEFAULT_PER_PAGE


@pytest.mark.parametrize("size", ["0", "-5"])
def test_a_page_length_below_one_is_one(queue: Browser, size: str) -> None:
    found = queue.get(f"/steward/requests/?per_page={size}&page=2")
    assert (_titles(found), f"Page 2 of {ROWS}" in found) == ([1], True)


def test_donations_and_held_files_page_separately(
    app: Flask, make_user: MakeUser, db_session: Session, donor: Browser
) -> None:
    donor_row = db_session.query(User).filter_by(email="donor@example.org").one()
    consent = db_session.query(Consent).one()
    db_session.add_all(
        Donation(
            id=f"don-{index:03d}",
            donor_id=donor_row.id,
            consent_id=consent.id,
            submission_key=f"{index:032x}",
            created_at=START + timedelta(minutes=index),
        )
        for index in range(ROWS)
    )
    db_session.commit()
    home = donor.get("/")
    assert home.count("/donations/don-") == DEFAULT_PER_PAGE
    assert "/donations/don-064" in home and "/donations/don-014" not in home  # newest first
    assert f"Page 1 of 2 ({ROWS} in all)" in home
    assert donor.get("/?page=2").count("/donations/don-") == ROWS - DEFAULT_PER_PAGE

    steward, _ = _login(app, make_user, "steward@example.org", "steward")
    page = steward.get("/steward/donations?page=2&held_page=7")
    assert page.count("Approve into pool") == ROWS - DEFAULT_PER_PAGE
    assert "Files held for review" not in page  # none held: no table, no pager


def test_consents_withdrawals_and_templates_page_one_row_at_a_time(
    app: Flask, make_user: MakeUser, db_session: Session, browser: Browser
) -> None:
    donors = [browser, Browser(app.test_client())]
    for index, donor in enumerate(donors):
        assert donor.register(f"donor{index}@example.org").status_code == 303
        assert donor.sign_consent().status_code == 200
        withdrawal = {"confirm": "yes", "scope": "all", "mode": "stop_use"}
        assert donor.submit("/consent/withdraw", withdrawal).status_code == 200
    spec = default_template_spec()
    publish_template(db_session, {**spec, "version": f"{spec['version']}.1"})
    db_session.commit()
    steward, _ = _login(app, make_user, "steward@example.org", "steward")
    pseudonyms = [c.pseudonym for c in db_session.query(Consent).order_by(Consent.signed_at)]
    for path, rows in (("/steward/", "<code>"), ("/steward/withdrawals", "stop future use")):
        first, second = (steward.get(f"{path}?per_page=1&page={n}") for n in (1, 2))
        assert "Page 1 of 2 (2 in all)" in first and "Page 2 of 2" in second
        assert first.count(rows) == second.count(rows)
        assert first != second
    assert pseudonyms[1] in steward.get("/steward/?per_page=1")  # the latest signed first
    templates = steward.get("/steward/templates?per_page=1")
    assert f"{spec['version']}.1" in templates and "Page 1 of 2" in templates


def test_tokens_pages_for_the_researcher_and_the_admin(
    app: Flask, make_user: MakeUser, db_session: Session
) -> None:
    browser, researcher = _login(app, make_user, "researcher@example.org", "researcher")
    now = datetime.now(UTC)
    for index in range(ROWS):
        tokens.issue(db_session, researcher, f"token {index:03d}", tokens.DEFAULT_SCOPES, 30, now)
    mine = browser.get("/researcher/tokens")
    assert mine.count("token-active") == DEFAULT_PER_PAGE
    assert "token 064" in mine and "token 014" not in mine  # newest first
    assert 'href="/researcher/tokens?page=2"' in mine
    assert browser.get("/researcher/tokens?page=2").count("token-active") == 15
    admin, _ = _login(app, make_user, "admin@example.org", "admin")
    every = admin.get("/steward/requests/tokens?per_page=20&page=4")
    assert every.count(">Revoke</button>") == ROWS - 60
    assert "Page 4 of 4" in every


def test_the_researcher_home_pages_requests(
    app: Flask, make_user: MakeUser, db_session: Session
) -> None:
    browser, researcher = _login(app, make_user, "researcher@example.org", "researcher")
    _requests(db_session, researcher)
    home = browser.get("/researcher/")
    assert _titles(home) == list(range(ROWS - 1, ROWS - 1 - DEFAULT_PER_PAGE, -1))
    assert 'href="/researcher/?page=2"' in home
    assert _titles(browser.get("/researcher/?page=2")) == list(range(ROWS - DEFAULT_PER_PAGE))[::-1]


# -- the API ---------------------------------------------------------------------------------


def _links(reply: TestResponse) -> dict[str, str]:
    return {
        rel: target for target, rel in re.findall(r'<([^>]+)>; rel="(\w+)"', reply.headers["Link"])
    }


def test_the_api_pages_with_link_and_total_headers(
    app: Flask, make_user: MakeUser, db_session: Session, client: FlaskClient
) -> None:
    researcher = make_user("researcher@example.org", "researcher")
    _requests(db_session, researcher)
    bearer = _bearer(app, db_session, researcher)

    first = client.get("/api/requests?per_page=25", headers=bearer)
    assert first.status_code == 200
    assert [r["title"] for r in first.get_json()] == [
        f"Request {index:03d}" for index in range(ROWS - 1, ROWS - 26, -1)
    ]
    assert first.headers["X-Total-Count"] == str(ROWS)
    assert _links(first) == {
        "first": "/api/requests?per_page=25&page=1",
        "next": "/api/requests?per_page=25&page=2",
        "last": "/api/requests?per_page=25&page=3",
    }
    last = client.get(_links(first)["last"], headers=bearer)
    assert len(last.get_json()) == ROWS - 50
    assert "next" not in _links(last) and _links(last)["prev"].endswith("page=2")
    past = client.get("/api/requests?per_page=25&page=4", headers=bearer)
    assert past.status_code == 200 and past.get_json() == []  # a script reading on stops
    assert _links(past)["prev"].endswith("page=3")

    capped = client.get(f"/api/requests?per_page={MAX_PER_PAGE + 1}", headers=bearer)
    assert len(capped.get_json()) == ROWS  # all of them, but at most MAX_PER_PAGE
    huge = client.get("/api/requests?page=" + "9" * 40, headers=bearer)
    assert huge.status_code == 200 and huge.get_json() == []
    junk = client.get("/api/requests?page=two&per_page=x", headers=bearer)
    assert len(junk.get_json()) == DEFAULT_PER_PAGE

    for path in ("/api/releases", "/api/notices"):
        empty = client.get(path, headers=bearer)
        assert (empty.get_json(), empty.headers["X-Total-Count"]) == ([], "0")
        assert _links(empty) == {"first": f"{path}?page=1", "last": f"{path}?page=1"}


def test_the_openapi_document_names_the_page_parameters(client: FlaskClient) -> None:
    paths = client.get("/api/openapi.json").get_json()["paths"]
    for path in ("/api/requests", "/api/releases", "/api/notices"):
        operation = paths[path]["get"]
        query = {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}
        assert query["per_page"]["schema"]["maximum"] == MAX_PER_PAGE
        assert "page" in query
        assert {"Link", "X-Total-Count"} <= set(operation["responses"]["200"]["headers"])


# -- list caps in schemas ----------------------------------------------------------------------


def test_a_filter_list_of_100000_codes_is_one_clear_422(
    app: Flask, make_user: MakeUser, db_session: Session, client: FlaskClient
) -> None:
    researcher = make_user("researcher@example.org", "researcher")
    bearer = _bearer(app, db_session, researcher)
    use = {"purpose": "health"}
    for codes, field in ((["CT"] * 100_000, "modalities"), (["x!"] * 100_000, "body_parts")):
        body = {"use": use, "filters": {field: codes}}
        reply = client.post("/api/requests/preview", json=body, headers=bearer)
        assert reply.status_code == 422
        assert len(reply.get_data()) < 2000  # one message, not one per item
        message = reply.get_json()["errors"]["filters"][field]
        assert message == [
            f"Name at most {50 if field == 'modalities' else 100} {field.replace('_', ' ')}."
        ]
    sexes = client.post(
        "/api/requests/preview", headers=bearer, json={"use": use, "filters": {"sexes": ["F"] * 4}}
    )
    assert sexes.status_code == 422


def test_the_request_form_refuses_too_many_codes(app: Flask, make_user: MakeUser) -> None:
    browser, _ = _login(app, make_user, "researcher@example.org", "researcher")
    form = {
        "title": "Lung nodules",
        "abstract": "A study of lung imaging data.",
        "purpose": "health",
        "modalities": ", ".join(["CT"] * 51),
        "action": "count",
    }
    page = browser.submit("/researcher/requests/new", form)
    assert page.status_code == 422
    assert "Name at most 50 modalities." in page.get_data(as_text=True)


def test_signing_with_too_many_modules_is_refused(browser: Browser) -> None:
    assert browser.register("donor@example.org").status_code == 303
    reply = browser.sign_consent(modules=[f"m{index}" for index in range(51)])
    assert reply.status_code == 422
    assert "Choose at most 50 modules." in reply.get_data(as_text=True)
