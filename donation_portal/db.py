"""Engine and session wiring: one session and one transaction per request or CLI job.

Services only ``flush()``; the boundary (end of request, end of a CLI command) commits.
Side effects that cannot be rolled back (deleting stored objects) run after the commit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, Response, current_app, g
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

_AFTER_COMMIT = "portal_after_commit"


def make_engine(url: str) -> Engine:
    # hide_parameters: an error's message (which we log) must not carry bound values,
    # e-mail addresses or sealed names among them
    options: dict[str, Any] = {"future": True, "hide_parameters": True}
    if url.startswith("sqlite"):
        options["connect_args"] = {"check_same_thread": False}
    else:
        options["pool_pre_ping"] = True
    engine = create_engine(url, **options)
    if url.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite's own transaction handling breaks SAVEPOINTs: let SQLAlchemy emit BEGIN.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN")


def init_app(app: Flask) -> None:
    engine = make_engine(app.config["DATABASE_URL"])
    app.extensions["portal_engine"] = engine
    app.extensions["portal_sessionmaker"] = sessionmaker(bind=engine, expire_on_commit=False)
    app.after_request(_commit_or_rollback)
    app.teardown_appcontext(_close_session)


def get_session() -> Session:
    """The session of the current request or CLI job."""
    if "db_session" not in g:
        factory: sessionmaker[Session] = current_app.extensions["portal_sessionmaker"]
        g.db_session = factory()
    return g.db_session


def on_commit(session: Session, action: Callable[[], None]) -> None:
    """Run ``action`` only once the session's transaction has committed."""
    session.info.setdefault(_AFTER_COMMIT, []).append(action)


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    actions = session.info.pop(_AFTER_COMMIT, [])
    for action in actions:
        action()


@event.listens_for(Session, "after_rollback")
def _forget_after_commit(session: Session) -> None:
    session.info.pop(_AFTER_COMMIT, None)


def commit() -> None:
    """Commit the current unit of work (the request or job boundary calls this)."""
    if "db_session" in g:
        g.db_session.commit()


def _commit_or_rollback(response: Response) -> Response:
    if "db_session" in g:
        if response.status_code < 400:
            g.db_session.commit()
        else:
            g.db_session.rollback()
    return response


def _close_session(_exc: BaseException | None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.close()
