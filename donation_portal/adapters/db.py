"""Database engines and the after-commit hook, with no web framework.

SQLite is the embedded default and must stay correct with many donors at once: it runs in
WAL mode (readers never wait for the writer), and a unit of work that will write opens its
transaction with ``BEGIN IMMEDIATE`` (:func:`begin_write`), so two writers queue for the lock
instead of failing with "database is locked" when a read transaction tries to upgrade.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session

_AFTER_COMMIT = "portal_after_commit"
_IMMEDIATE = "portal_sqlite_immediate"
_WRITING = "portal_writing"
SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str) -> Engine:
    # hide_parameters: an error's message (which we log) must not carry bound values,
    # e-mail addresses or sealed names among them
    options: dict[str, Any] = {"hide_parameters": True}
    if url.startswith("sqlite"):
        options["connect_args"] = {"check_same_thread": False}
    else:
        options["pool_pre_ping"] = True
    engine = create_engine(url, **options)
    if url.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def is_sqlite(session: Session) -> bool:
    bind = session.get_bind()
    return bind.dialect.name == "sqlite"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite's own transaction handling breaks SAVEPOINTs: let SQLAlchemy emit BEGIN.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "memory":
        cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    immediate = connection.get_execution_options().get(_IMMEDIATE)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def begin_write(session: Session) -> None:
    """Start ``session``'s transaction as a writer (SQLite: ``BEGIN IMMEDIATE``).

    Call it first thing in a unit of work that will write. A read transaction the request
    opened before (loading the logged-in user, say) is ended first: on SQLite a read that
    later writes fails at once with "database is locked" when another writer committed in
    between, whatever the busy timeout. Nothing may be pending in the session then.
    """
    if session.info.get(_WRITING):
        return
    if session.in_transaction():
        if session.new or session.dirty or session.deleted:
            raise RuntimeError("begin_write() with unflushed changes; call it first")
        session.commit()
    session.connection(execution_options={_IMMEDIATE: True})
    session.info[_WRITING] = True


def on_commit(session: Session, action: Callable[[], None]) -> None:
    """Run ``action`` only once the session's transaction has committed."""
    session.info.setdefault(_AFTER_COMMIT, []).append(action)


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    session.info.pop(_WRITING, None)
    actions = session.info.pop(_AFTER_COMMIT, [])
    for action in actions:
        action()


@event.listens_for(Session, "after_rollback")
def _forget_after_commit(session: Session) -> None:
    session.info.pop(_WRITING, None)
    session.info.pop(_AFTER_COMMIT, None)
