"""Fixtures shared by the whole suite.

Database tests run on SQLite and on PostgreSQL: each backend is migrated once per run
(through alembic, like production), and every test runs inside an outer transaction that is
rolled back, with the app's session joined to it as a SAVEPOINT.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Connection, Engine, create_engine, make_url, text
from sqlalchemy.orm import Session, sessionmaker

from donation_portal import create_app
from donation_portal.adapters import migrate
from donation_portal.adapters.db import make_engine
from donation_portal.cli.dev_setup import prepare_instance

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_redis(url: str, what: str) -> None:
    """Fail (CI=true) or skip ``what`` when no Redis answers at ``url``."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        message = f"Redis at {url} is unreachable"
        if IN_CI:
            pytest.fail(f"{message} (CI=true requires it): {exc}", pytrace=False)
        pytest.skip(f"{message}; {what} skipped")
    finally:
        client.close()


def postgres_admin_url() -> str:
    return os.environ.get("PORTAL_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


def create_postgres_database() -> tuple[str, Engine]:
    """A fresh, empty database on the test server; returns its URL and an admin engine."""
    admin = create_engine(postgres_admin_url(), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        admin.dispose()
        message = (
            f"PostgreSQL at {make_url(postgres_admin_url()).render_as_string()} is unreachable"
        )
        if IN_CI:
            pytest.fail(f"{message} (CI=true requires it): {exc}", pytrace=False)
        pytest.skip(f"{message}; PostgreSQL tests skipped (set PORTAL_TEST_POSTGRES_URL)")
    name = f"portal_test_{secrets.token_hex(6)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(postgres_admin_url()).set(database=name).render_as_string(hide_password=False)
    return url, admin


def drop_postgres_database(admin: Engine, url: str) -> None:
    name = make_url(url).database
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated database of each backend, for the whole run."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'portal.sqlite3'}"
        migrate.upgrade(url)
        yield url
        return
    url, admin = create_postgres_database()
    try:
        migrate.upgrade(url)
        yield url
    finally:
        drop_postgres_database(admin, url)


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def connection(engine: Engine) -> Iterator[Connection]:
    """A connection inside an outer transaction, rolled back after the test."""
    with engine.connect() as conn:
        outer = conn.begin()
        yield conn
        if outer.is_active:
            outer.rollback()


@pytest.fixture
def session_factory(connection: Connection) -> sessionmaker[Session]:
    return sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )


@pytest.fixture
def db_session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    session = session_factory()
    yield session
    session.close()


@pytest.fixture
def instance_path(tmp_path: Path) -> Path:
    instance = tmp_path / "instance"
    prepare_instance(instance)
    return instance


@pytest.fixture
def app_config(instance_path: Path, database_url: str) -> dict[str, Any]:
    return {
        "ENV": "test",
        "INSTANCE_PATH": str(instance_path),
        "DATABASE_URL": database_url,
    }


@pytest.fixture
def app(app_config: dict[str, Any], session_factory: sessionmaker[Session]) -> Iterator[Flask]:
    app = create_app(app_config)
    app.extensions["portal_sessionmaker"] = session_factory
    yield app
    app.extensions["portal_engine"].dispose()


@pytest.fixture
def production_app(
    app_config: dict[str, Any], session_factory: sessionmaker[Session]
) -> Iterator[Flask]:
    """The app with production settings (Secure cookies, HSTS), on the test database."""
    config = {
        **app_config,
        "ENV": "production",
        "SECRET_KEY": "k" * 48,
        "RATELIMIT_STORAGE_URI": "memory://",
        "CONTROLLER_NAME": "Example Hospital",
        "CONTROLLER_ADDRESS": "Beispielstraße 1, 12345 Musterstadt",
        "CONTROLLER_CONTACT": "datenschutz@example.org",
    }
    app = create_app(config)
    app.extensions["portal_sessionmaker"] = session_factory
    yield app
    app.extensions["portal_engine"].dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask):  # type: ignore[no-untyped-def]
    return app.test_cli_runner()


CSRF_PATTERN = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(html: str) -> str:
    match = CSRF_PATTERN.search(html)
    assert match, "page has no CSRF token"
    return match.group(1)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A new, unmigrated database of each backend, dropped after the test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.sqlite3'}"
        return
    url, admin = create_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(admin, url)
