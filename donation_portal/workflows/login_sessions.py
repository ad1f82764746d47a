"""Login sessions kept on the server: one row per logged-in browser, listed to its owner.

The session cookie (signed by the web layer) holds a random key naming its row; the row
keeps only the key's SHA-256. A request whose row is gone is not logged in, so deleting rows
ends sessions: one (logging out, its owner ending it from another browser), the owner's
others (after a password change), or all of them (a password reset, an admin disabling the
account). Idle and absolute limits are checked on every request by the web layer; rows of
sessions that ran out without a further request are pruned at the owner's next login.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, or_, select, update
from sqlalchemy.orm import Session

import consent as consents
from consent.canonical import as_utc
from donation_portal.adapters.db import begin_write
from donation_portal.adapters.models import LoginSession, User, user_ref

KEY_BYTES = 32
# a session's last request is written at most this often: one write per minute, not per page
TOUCH_EVERY = timedelta(minutes=1)
DEVICE_LENGTH = 100


@dataclass(frozen=True)
class Limits:
    """How long a session of one account may idle, and last at most."""

    idle: timedelta
    lifetime: timedelta

    def live(self, row: LoginSession, now: datetime) -> bool:
        # TOUCH_EVERY: the row's last request may lag the real one by that much
        return (
            as_utc(row.last_seen_at) > now - self.idle - TOUCH_EVERY
            and as_utc(row.created_at) > now - self.lifetime
        )


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def begin(
    session: Session, user: User, device: str, now: datetime, limits: Limits
) -> tuple[str, LoginSession]:
    """A new login session of ``user`` on ``device``: the key its cookie keeps, and its row.
    Prunes the user's sessions that ran out. Commits."""
    begin_write(session)
    session.execute(
        delete(LoginSession).where(
            LoginSession.user_id == user.id,
            or_(
                LoginSession.last_seen_at <= now - limits.idle - TOUCH_EVERY,
                LoginSession.created_at <= now - limits.lifetime,
            ),
        )
    )
    key = secrets.token_urlsafe(KEY_BYTES)
    row = LoginSession(
        user_id=user.id,
        key_hash=_digest(key),
        device=device[:DEVICE_LENGTH],
        created_at=now,
        last_seen_at=now,
    )
    session.add(row)
    session.commit()
    return key, row


def find(session: Session, key: str) -> tuple[LoginSession, User] | None:
    """The live session ``key`` names and its account; None once it was ended (or the
    account disabled)."""
    query = (
        select(LoginSession, User)
        .join(User, User.id == LoginSession.user_id)
        .where(LoginSession.key_hash == _digest(key), User.disabled_at.is_(None))
    )
    found = session.execute(query).first()
    return (found[0], found[1]) if found is not None else None


def touch(session: Session, key: str, now: datetime) -> None:
    """Record a request of the session ``key`` names (for its owner's list). Commits."""
    begin_write(session)
    session.execute(
        update(LoginSession)
        .where(LoginSession.key_hash == _digest(key))
        .values(last_seen_at=now)
        .execution_options(synchronize_session=False)
    )
    session.commit()


def of_user(session: Session, user: User, now: datetime, limits: Limits) -> list[LoginSession]:
    """``user``'s live sessions, the most recently used first."""
    query = select(LoginSession).where(LoginSession.user_id == user.id)
    rows = session.scalars(query.order_by(LoginSession.last_seen_at.desc(), LoginSession.id))
    return [row for row in rows if limits.live(row, now)]


def end(session: Session, user: User, session_id: int, reason: str) -> bool:
    """End ``user``'s session ``session_id`` (audited with ``reason``); False if there is
    none such (ended already, or someone else's). Commits."""
    begin_write(session)
    ended = drop(session, user, session_id)
    if ended:
        _audit(session, user, {"reason": reason, "sessions": ended})
    session.commit()
    return ended > 0


def end_others(session: Session, user: User, keep_id: int) -> int:
    """End every session of ``user`` but ``keep_id`` (the one asking). Audited. Commits."""
    begin_write(session)
    ended = end_all(session, user, keep_id=keep_id)
    _audit(session, user, {"reason": "others", "sessions": ended})
    session.commit()
    return ended


def end_all(session: Session, user: User, *, keep_id: int | None = None) -> int:
    """Delete ``user``'s sessions (but ``keep_id``); how many. Flushes only: a step of a
    larger unit of work (a password change or reset, disabling the account)."""
    conditions: list[ColumnElement[bool]] = [LoginSession.user_id == user.id]
    if keep_id is not None:
        conditions.append(LoginSession.id != keep_id)
    return _delete(session, *conditions)


def drop(session: Session, user: User, session_id: int) -> int:
    """Delete ``user``'s session ``session_id``; 1, or 0 if there is none such. Flushes
    only: a step of logging out, or of a session running out."""
    return _delete(session, LoginSession.user_id == user.id, LoginSession.id == session_id)


def _delete(session: Session, *conditions: ColumnElement[bool]) -> int:
    result = session.execute(
        delete(LoginSession).where(*conditions).execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _audit(session: Session, user: User, detail: dict[str, str | int]) -> None:
    consents.audit.record(
        session,
        "auth.session_ended",
        actor=user_ref(user.id),
        subject_type="user",
        subject_id=str(user.id),
        detail=detail,
    )
