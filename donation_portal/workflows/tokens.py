"""API tokens for researchers: random, shown once, stored as a SHA-256 only.

A token is the only way into the JSON API (a login cookie is not accepted there: a browser
would send it with any site's request). So that a leaked token does limited harm for a
limited time (OWASP ASVS 3.5), each one has a name its owner recognises it by, grants only
the scopes chosen for it, expires (by default after DEFAULT_LIFETIME_DAYS, never later than
MAX_LIFETIME_DAYS) and can be revoked by its owner or an admin. A SHA-256 suffices to store
it: the token holds 256 random bits, so no guess can be tested against a leaked digest.

The token value is never logged nor audited; refusals are logged with the token's row ID.
Creation, revocation and use are audited; use only once per token and UTC day: a script
makes thousands of calls (a tar download, a polling loop), and an entry for each would bury
the trail's other entries without telling more than "this token was in use that day".
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

import consent as consents
from consent.canonical import as_utc, iso_utc
from donation_portal.adapters.db import begin_write
from donation_portal.adapters.models import ApiToken, User, user_ref
from donation_portal.workflows.listing import window
from donation_portal.workflows.releases import ResearchError

READ_RELEASES = "releases:read"
READ_REQUESTS = "requests:read"
CREATE_REQUESTS = "requests:create"
ACKNOWLEDGE_NOTICES = "notices:acknowledge"
# what each scope lets a token do, in the words the researcher chooses them by; reading
# releases includes their withdrawal notices: whoever holds the data must learn of them
SCOPES = {
    READ_RELEASES: (
        "Read your releases: list them, read their manifests and withdrawal notices, "
        "download their files"
    ),
    READ_REQUESTS: "See your access requests and the decisions on them",
    CREATE_REQUESTS: "Submit access requests, and count the data a use and filters match",
    ACKNOWLEDGE_NOTICES: "Acknowledge withdrawal notices",
}
DEFAULT_SCOPES = (READ_RELEASES,)  # the least a token is useful with
DEFAULT_NAME = "API token"
DEFAULT_LIFETIME_DAYS = 90
MAX_LIFETIME_DAYS = 365
# a token's last use is written at most this often: a tar download may make many calls
LAST_USED_PRECISION = timedelta(minutes=1)
PREFIX = "dp_"

ACTIVE, EXPIRED, REVOKED = "active", "expired", "revoked"
MAKE_ANOTHER = "Create a new one on your research page."

log = logging.getLogger(__name__)


class TokenRefused(Exception):
    """The API refuses this token (unknown, expired or revoked); the message is safe to show."""


@dataclass(frozen=True)
class Grant:
    """What an accepted token lets its bearer do: act as ``owner`` within ``scopes``."""

    owner: User
    scopes: frozenset[str]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue(
    session: Session, owner: User, name: str, scopes: Collection[str], days: int, now: datetime
) -> tuple[str, ApiToken]:
    """A new token for ``owner``, valid for ``days`` from ``now``, and its row (which keeps
    only its digest; the caller has checked ``scopes`` against SCOPES and ``days`` against
    the bounds). Audited, without the token. Commits."""
    begin_write(session)
    token = PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        user_id=owner.id,
        token_hash=_digest(token),
        name=name,
        scopes=sorted(set(scopes)),
        created_at=now,
        expires_at=now + timedelta(days=days),
    )
    session.add(row)
    session.flush()
    detail = {"scopes": row.scopes, "expires_at": iso_utc(row.expires_at)}
    _audit(session, "researcher.token_created", owner, row, detail)
    session.commit()
    return token, row


def authenticate(session: Session, token: str, now: datetime) -> Grant:
    """What ``token`` grants at ``now``, recording its use; TokenRefused if the API must not
    take it. Commits when it records the use: at most once per LAST_USED_PRECISION, and at
    the first use of each UTC day, which is audited."""
    row = session.scalars(select(ApiToken).where(ApiToken.token_hash == _digest(token))).first()
    if row is None:
        log.info("API token refused: unknown")
        raise TokenRefused(f"This API token is not valid (copied whole?). {MAKE_ANOTHER}")
    current = state(row, now)
    if current != ACTIVE:
        log.info("API token %s refused: %s", row.id, current)
        what = "was revoked" if current == REVOKED else "expired"
        when = _when(row.revoked_at or row.expires_at)
        raise TokenRefused(f"This API token {what} on {when}. {MAKE_ANOTHER}")
    owner = session.get_one(User, row.user_id)
    today = as_utc(now).date()
    last_used = row.last_used_at
    first_today = last_used is None or as_utc(last_used).date() != today
    if first_today or (last_used is not None and now - as_utc(last_used) >= LAST_USED_PRECISION):
        begin_write(session)
        if first_today:
            _audit(session, "researcher.token_used", owner, row, {"day": today.isoformat()})
        row.last_used_at = now
        session.commit()
    return Grant(owner=owner, scopes=frozenset(row.scopes))


def _when(moment: datetime) -> str:
    return as_utc(moment).strftime("%Y-%m-%d %H:%M UTC")


def state(token: ApiToken, now: datetime) -> str:
    """ACTIVE, EXPIRED or REVOKED."""
    if token.revoked_at is not None:
        return REVOKED
    return EXPIRED if as_utc(token.expires_at) <= now else ACTIVE


def tokens_of(session: Session, owner: User, limit: int, offset: int) -> tuple[list[ApiToken], int]:
    """A page of the tokens ``owner`` made, newest first (those expired or revoked too),
    and how many they made."""
    query = select(ApiToken).where(ApiToken.user_id == owner.id)
    return window(session, query.order_by(ApiToken.id.desc()), limit, offset)


def live_tokens(
    session: Session, now: datetime, limit: int, offset: int
) -> tuple[list[tuple[ApiToken, User]], int]:
    """A page of the tokens the API still takes, with their owners, newest first (for
    admins), and how many there are."""
    query = (
        select(ApiToken, User)
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.revoked_at.is_(None), ApiToken.expires_at > now)
        .order_by(ApiToken.id.desc())
    )
    rows, total = window(session, query, limit, offset)
    return [(token, owner) for token, owner in rows], total


def revoke(
    session: Session, token_id: int, actor: User, now: datetime, *, any_owner: bool = False
) -> ApiToken:
    """Revoke a token of ``actor``'s (``any_owner``: anyone's, for an admin); the API refuses
    it from then on. Revoking it again changes nothing. Audited. Commits."""
    begin_write(session)
    token = session.get(ApiToken, token_id)
    if token is None or not (any_owner or token.user_id == actor.id):
        raise ResearchError("There is no such API token.", 404)
    if token.revoked_at is None:
        token.revoked_at, token.revoked_by = now, actor.id
        detail = {"owner": user_ref(token.user_id)}
        _audit(session, "researcher.token_revoked", actor, token, detail)
    session.commit()
    return token


def _audit(
    session: Session, action: str, actor: User, token: ApiToken, detail: Mapping[str, object]
) -> None:
    consents.audit.record(
        session,
        action,
        actor=user_ref(actor.id),
        subject_type="api_token",
        subject_id=str(token.id),
        detail=detail,
    )
