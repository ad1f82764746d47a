"""Bad input to researcher access: clear 4xx answers, nothing stored."""

from __future__ import annotations

import re

from flask import Flask
from openapi_spec_validator import validate
from sqlalchemy import select
from sqlalchemy.orm import Session

from donation_portal.adapters.models import AccessRequest, ResearcherProfile

from ..conftest import PASSWORD, Browser

KEY = "-----BEGIN CRYPT4GH PUBLIC KEY-----\n{}\n-----END CRYPT4GH PUBLIC KEY-----\n"


def _researcher(app: Flask, make_user) -> Browser:  # type: ignore[no-untyped-def]
    make_user("r@example.org", "researcher")
    browser = Browser(app.test_client())
    assert browser.login("r@example.org", PASSWORD).status_code == 303
    return browser


def test_a_malformed_public_key_is_refused(app: Flask, make_user, db_session: Session) -> None:  # type: ignore[no-untyped-def]
    researcher = _researcher(app, make_user)
    for key in ("not a key at all", KEY.format("c2hvcnQ=")):
        answer = researcher.submit("/researcher/profile", {"affiliation": "Lab", "public_key": key})
        assert answer.status_code == 422
        assert "Crypt4GH public key" in answer.get_data(as_text=True)
    assert db_session.scalars(select(ResearcherProfile)).all() == []


def test_unknown_uses_and_requests_without_data_are_refused(  # type: ignore[no-untyped-def]
    app: Flask, make_user, db_session: Session
) -> None:
    researcher = _researcher(app, make_user)
    key = KEY.format("dHRPgjw1WxbmEfL5tgHBqfwKRcorgd6XXswnjPc6E3g=")
    assert (
        researcher.submit(
            "/researcher/profile", {"affiliation": "Lab", "public_key": key}
        ).status_code
        == 303
    )
    form = {"title": "Study", "abstract": "A study of imaging data.", "action": "submit"}
    unknown = researcher.submit("/researcher/requests/new", {**form, "purpose": "DUO:9999999"})
    assert unknown.status_code == 422 and "Unknown research purpose" in unknown.get_data(
        as_text=True
    )
    empty = researcher.submit("/researcher/requests/new", {**form, "purpose": "health"})
    assert empty.status_code == 422 and "No donated data" in empty.get_data(as_text=True)
    assert db_session.scalars(select(AccessRequest)).all() == []


def test_the_openapi_document_describes_the_api(client) -> None:  # type: ignore[no-untyped-def]
    document = client.get("/api/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    assert "/api/releases/{release_id}/manifest" in document["paths"]
    assert "ManifestItem" in document["components"]["schemas"]
    assert client.get("/api/notices").status_code == 401
    validate(document)  # a valid OpenAPI 3 document, path parameters declared


def test_the_openapi_document_lists_every_api_route(app: Flask, client) -> None:  # type: ignore[no-untyped-def]
    document = client.get("/api/openapi.json").get_json()
    documented = {
        (method.upper(), path) for path, operations in document["paths"].items()
        for method in operations
    }
    routes = {
        (method, re.sub(r"<(?:int:)?(\w+)>", r"{\1}", rule.rule))
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/") and rule.rule != "/api/openapi.json"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert routes == documented
    lists = ["/api/requests", "/api/releases", "/api/notices"]
    for path in lists:
        ok = document["paths"][path]["get"]["responses"]["200"]
        assert ok["content"]["application/json"]["schema"]["type"] == "array"
