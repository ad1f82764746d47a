"""One database session per request or CLI command, bound to Flask's application context."""

from __future__ import annotations

from flask import Flask, Response, current_app, g
from sqlalchemy.orm import Session, sessionmaker

from donation_portal.adapters.db import make_engine


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
