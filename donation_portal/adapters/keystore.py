"""The storage library's KeyStore, kept in the database inside the request's transaction."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from donation_portal.adapters.models import ScopeKey
from storage import KeyUnavailable, WrappedKey


class DatabaseKeyStore:
    def __init__(self, session: Session) -> None:
        self._session = session

    def get(self, scope_id: str) -> WrappedKey | None:
        row = self._session.get(ScopeKey, scope_id)
        return None if row is None else _wrapped(row)

    def add(self, key: WrappedKey) -> None:
        self._session.add(
            ScopeKey(
                scope_id=key.scope_id,
                public_key=key.public_key,
                wrapped_private_key=key.wrapped_private_key,
                kek_version=key.kek_version,
            )
        )
        self._session.flush()

    def replace(self, key: WrappedKey) -> None:
        row = self._session.get(ScopeKey, key.scope_id)
        if row is None:
            raise KeyUnavailable(f"scope {key.scope_id} has no key to replace")
        row.wrapped_private_key = key.wrapped_private_key
        row.kek_version = key.kek_version
        row.public_key = key.public_key
        self._session.flush()

    def destroy(self, scope_id: str) -> None:
        """Delete the row: once committed, the wrapped private key is gone from the database."""
        self._session.execute(delete(ScopeKey).where(ScopeKey.scope_id == scope_id))

    def all(self) -> Iterator[WrappedKey]:
        for row in self._session.scalars(select(ScopeKey).order_by(ScopeKey.scope_id)):
            yield _wrapped(row)


def _wrapped(row: ScopeKey) -> WrappedKey:
    return WrappedKey(
        scope_id=row.scope_id,
        public_key=bytes(row.public_key),
        wrapped_private_key=bytes(row.wrapped_private_key),
        kek_version=row.kek_version,
    )
