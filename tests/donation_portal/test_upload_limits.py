"""Size limits: per file (a clear per-file reason) and per request (413, nothing stored)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from donation_portal.adapters.models import Donation, StoredObject

from .conftest import Browser
from .phi import real_file

FILE_LIMIT = 20_000
REQUEST_LIMIT = 150_000


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, "MAX_FILE_BYTES": FILE_LIMIT, "MAX_REQUEST_BYTES": REQUEST_LIMIT}


def test_a_file_over_the_limit_is_refused_with_the_limit_named(
    app: Flask, donor: Browser, db_session: Session
) -> None:
    big = real_file("CT_small.dcm").content
    assert len(big) > FILE_LIMIT
    response = donor.upload([big])
    assert response.status_code == 413
    assert "larger than the" in response.get_data(as_text=True)
    assert db_session.scalar(select(func.count()).select_from(StoredObject)) == 0
    assert not list(Path(app.config["STORAGE_DIR"]).rglob("*.c4gh"))


def test_an_upload_over_the_request_limit_gets_413_and_stores_nothing(
    app: Flask, donor: Browser, db_session: Session
) -> None:
    response = donor.upload([b"\0" * (REQUEST_LIMIT + 1)])
    assert response.status_code == 413
    assert "too large" in response.get_data(as_text=True)
    assert db_session.scalar(select(func.count()).select_from(Donation)) == 0
    storage_dir = Path(app.config["STORAGE_DIR"])
    assert not storage_dir.exists() or not [p for p in storage_dir.rglob("*") if p.is_file()]
