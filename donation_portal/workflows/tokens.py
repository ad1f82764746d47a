"""API tokens for researchers: random, shown once, stored as a SHA-256 only."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from donation_portal.adapters.db import begin_write
from donation_portal.adapters.models import ApiToken, User


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue(session: Session, user: User) -> str:
    """A new token for ``user`` (only its digest is kept). Commits."""
    begin_write(session)
    token = "dp_" + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, token_hash=_digest(token)))
    session.commit()
    return token


def user_for(session: Session, token: str) -> User | None:
    found = session.scalars(select(ApiToken).where(ApiToken.token_hash == _digest(token))).first()
    return session.get(User, found.user_id) if found is not None else None
