"""One database session per request or CLI command, bound to Flask's application context.

Each use case commits its own unit of work with an explicit ``session.commit()`` (in the
workflow, or in the view or command calling a flush-only service). The boundary never
commits: when the request or command ends, whatever was not committed is rolled back and
the session closed.
"""

from __future__ import annotations

import logging

import psycopg
from flask import Flask, current_app, g
from sqlalchemy import event, exc
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker

from donation_portal.adapters.db import make_engine

log = logging.getLogger(__name__)

# The database cannot be used right now (down, unreachable, restarting, a connection killed,
# the pool exhausted, a lock or statement timeout): the request may succeed when retried.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    exc.OperationalError,
    exc.InterfaceError,
    exc.DisconnectionError,
    exc.TimeoutError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)
_COMMITTED = "portal_committed"
_WROTE = "portal_wrote"


def init_app(app: Flask) -> None:
    engine = make_engine(app.config["DATABASE_URL"])
    app.extensions["portal_engine"] = engine
    app.extensions["portal_sessionmaker"] = sessionmaker(bind=engine, expire_on_commit=False)
    app.teardown_appcontext(_close_session)


def get_session() -> Session:
    """The session of the current request or CLI job."""
    if "db_session" not in g:
        factory: sessionmaker[Session] = current_app.extensions["portal_sessionmaker"]
        session = factory()
        event.listen(session, "after_flush", _mark_written)
        event.listen(session, "do_orm_execute", _mark_dml)
        event.listen(session, "after_commit", _mark_committed)
        event.listen(session, "after_rollback", _forget_written)
        g.db_session = session
    current: Session = g.db_session
    return current


def committed() -> bool:
    """Whether the current request or job has committed a change (an error page must not
    claim "nothing was stored" then). Commits that only end a read do not count."""
    session = g.get("db_session")
    return bool(session is not None and session.info.get(_COMMITTED))


def _mark_written(session: Session, _context: object) -> None:
    session.info[_WROTE] = True


def _mark_dml(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        state.session.info[_WROTE] = True


def _mark_committed(session: Session) -> None:
    if session.info.pop(_WROTE, False):
        session.info[_COMMITTED] = True


def _forget_written(session: Session) -> None:
    session.info.pop(_WROTE, None)


def _close_session(_exc: BaseException | None) -> None:
    """Roll back what the request did not commit, and give the connection back.

    A connection the database dropped (restart, ``pg_terminate_backend``) fails even to roll
    back; the pool then discards it, and the reply (already made) stands.
    """
    session: Session | None = g.pop("db_session", None)
    if session is None:
        return
    try:
        session.rollback()
    except Exception:  # noqa: BLE001 - a dead connection; the pool replaces it
        log.warning("rollback at the end of the request failed; connection discarded")
    finally:
        try:
            session.close()
        except Exception:  # noqa: BLE001
            log.warning("closing the database session failed; connection discarded")
