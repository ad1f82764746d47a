"""Tables of second factors: an authenticator app's secret (TOTP), security keys (WebAuthn)
and recovery codes.

Kept apart from ``models`` so that module stays about donations; both share the consent
library's MetaData (``models`` imports this module, so loading either registers both).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from consent.db import ConsentBase, utcnow


class Base(DeclarativeBase):
    metadata = ConsentBase.metadata


class TotpCredential(Base):
    """One account's authenticator app.

    Secrets are sealed (AES-GCM under a key derived from the app's secret key), so a copy of
    the database alone cannot mint codes. ``secret`` is the confirmed app (None until the
    user has typed one code from it); ``pending_secret`` an app being set up, which replaces
    it only once confirmed, so replacing a phone never leaves the account without a factor.
    ``last_step`` is the time step of the newest code accepted: a code of that step or an
    earlier one is refused, so an overheard code cannot be replayed.
    """

    __tablename__ = "totp_credentials"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    secret: Mapped[bytes | None] = mapped_column(LargeBinary)
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_step: Mapped[int | None] = mapped_column(BigInteger)
    pending_secret: Mapped[bytes | None] = mapped_column(LargeBinary)
    pending_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RecoveryCode(Base):
    """A single-use code for when the app is lost; only its SHA-256 is kept.

    The codes carry 80 random bits, so a fast hash is enough: nobody can guess them back
    from the hash, and checking one never costs ten slow password hashes.
    """

    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class SecurityKey(Base):
    """A security key (WebAuthn credential) registered to an account.

    Only the public half is kept: a copy of the database lets nobody log in. ``sign_count``
    is the signature counter the key reported last; an assertion whose counter does not go
    up (for a key that counts at all) comes from a clone, and is refused.
    """

    __tablename__ = "security_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    credential_id: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)  # COSE-encoded
    sign_count: Mapped[int] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class SecurityKeyChallenge(Base):
    """The challenge of one account's WebAuthn ceremony in progress (registering a key or
    signing with one): one at a time per account, deleted when answered, right or wrong, so
    a response can be accepted once only, even if an older session cookie is replayed.
    ``purpose`` keeps a registration's challenge from being answered with a login's."""

    __tablename__ = "security_key_challenges"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16))
    challenge: Mapped[bytes] = mapped_column(LargeBinary)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
