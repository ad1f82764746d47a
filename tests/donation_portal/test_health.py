"""/healthz reports the database, the storage folder and the version."""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient

from donation_portal import __version__


def test_healthy(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {
        "status": "ok",
        "database": "ok",
        "storage": "ok",
        "version": __version__,
    }


def test_unwritable_storage_is_reported(app: Flask, client: FlaskClient) -> None:
    if os.geteuid() == 0:
        # root writes through permission bits: make the storage path a file instead.
        storage_dir = Path(app.config["STORAGE_DIR"])
        storage_dir.parent.mkdir(parents=True, exist_ok=True)
        if storage_dir.exists():
            storage_dir.rmdir()
        storage_dir.write_text("not a folder")
    else:
        Path(app.config["STORAGE_DIR"]).mkdir(parents=True, exist_ok=True)
        os.chmod(app.config["STORAGE_DIR"], 0o500)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json["storage"] == "not writable"
    assert response.json["database"] == "ok"


def test_unreachable_database_is_reported(app: Flask, client: FlaskClient) -> None:
    from sqlalchemy.orm import sessionmaker

    from donation_portal.adapters.db import make_engine

    broken = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    app.extensions["portal_sessionmaker"] = sessionmaker(bind=broken)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json["database"] == "unreachable"
    broken.dispose()
