"""Access requests through the JSON API: preview, submit, list; bad bodies are clear 422s."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from ..conftest import Browser
from .test_cohort_filters import researcher  # noqa: F401 - the fixture: two approved donations

ETHICS = b"%PDF-1.4 Ethics board approval no. 2026-17"
USE = {"purpose": "health", "publishes": True}
NEW = {"title": "Lung nodules", "abstract": "A study of lung imaging data.", "use": USE}


@pytest.fixture
def api(app: Flask, researcher: Browser) -> tuple[FlaskClient, dict[str, str]]:  # noqa: F811
    scopes = ["requests:read", "requests:create"]
    page = researcher.submit("/researcher/tokens", {"name": "requests", "scopes": scopes})
    token = re.search(r'class="token">([^<]+)<', page.get_data(as_text=True)).group(1)
    return app.test_client(), {"Authorization": f"Bearer {token}"}


def test_a_researcher_previews_submits_and_lists_requests(
        api: tuple[FlaskClient, dict[str, str]], app: Flask) -> None:
    client, bearer = api
    preview = client.post("/api/requests/preview", json={"use": USE}, headers=bearer)
    assert preview.get_json() == {"donors": 2, "studies": 2, "files": 2}
    only_women = {"use": USE, "filters": {"sexes": ["F"]}}
    assert client.post("/api/requests/preview", json=only_women,
                       headers=bearer).get_json()["donors"] == 1

    body = {**NEW, "filters": {"modalities": ["CT"]},
            "ethics_document": base64.b64encode(ETHICS).decode()}
    created = client.post("/api/requests", json=body, headers=bearer)
    assert created.status_code == 201, created.get_json()
    made = created.get_json()
    assert made["status"] == "submitted" and made["ethics_document"] is True
    assert made["use"]["ethics_approved"] is True and made["release_id"] is None
    listed = client.get("/api/requests", headers=bearer).get_json()
    assert [r["id"] for r in listed] == [made["id"]]
    stored = b"".join(p.read_bytes() for p in Path(app.config["STORAGE_DIR"]).rglob("*")
                      if p.is_file())
    assert b"Ethics board" not in stored


@pytest.mark.parametrize(("body", "field"), [
    ({**NEW, "use": {"purpose": "world-domination"}}, "use"),
    ({**NEW, "use": {**USE, "disease": "not a code"}}, "use"),
    ({**NEW, "title": ""}, "title"),
    ({**NEW, "filters": {"age_min": 50, "age_max": 10}}, "filters"),
    ({**NEW, "ethics_document": "@@@not base64@@@"}, None),
    ({**NEW, "use": {**USE, "disease": "MONDO:0005015"}}, "use"),  # a disease, but not DS
    ({**NEW, "ethics_document": ""}, None),
    ([1, 2, 3], None),
])
def test_bad_bodies_are_422_problems(api: tuple[FlaskClient, dict[str, str]], body: object,
                                     field: str | None) -> None:
    client, bearer = api
    answer = client.post("/api/requests", json=body, headers=bearer)
    assert answer.status_code == 422
    problem = answer.get_json()
    assert problem["status"] == 422 and problem["detail"]
    if field is not None:
        assert field in problem["errors"]
    assert client.get("/api/requests", headers=bearer).get_json() == []


def test_a_request_matching_nothing_is_refused(api: tuple[FlaskClient, dict[str, str]]) -> None:
    client, bearer = api
    body = {**NEW, "filters": {"modalities": ["US"]}}
    answer = client.post("/api/requests", json=body, headers=bearer)
    assert answer.status_code == 422
    assert "No donated data matches" in answer.get_json()["detail"]


def test_requests_need_a_token(api: tuple[FlaskClient, dict[str, str]]) -> None:
    client, _ = api
    assert client.post("/api/requests", json=NEW).status_code == 401
    assert client.get("/api/requests").status_code == 401
    wrong = {"Authorization": "Bearer not-a-token"}
    assert client.post("/api/requests/preview", json={"use": USE}, headers=wrong).status_code == 401


def test_the_openapi_document_describes_requests(client: FlaskClient) -> None:
    paths = client.get("/api/openapi.json").get_json()["paths"]
    assert {"get", "post"} <= set(paths["/api/requests"])
    assert "post" in paths["/api/requests/preview"]
