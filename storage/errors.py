"""Typed errors of the storage library.

Messages name the object (or key scope) concerned and never contain key
material or content, so they are safe to log and to show to an operator.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every error raised by :mod:`storage`."""

    def __init__(self, message: str, object_id: str | None = None) -> None:
        self.object_id = object_id
        self.reason = message
        if object_id is not None:
            message = f"object {object_id}: {message}"
        super().__init__(message)


class IntegrityError(StorageError):
    """Stored bytes do not authenticate or do not match the recorded size/digest."""


class KeyUnavailable(StorageError):
    """A key needed to read or write is missing, destroyed, wrong or unreadable."""


class ObjectNotFound(StorageError):
    """The backend holds no object under that ID."""


def naming(error: StorageError, object_id: str) -> StorageError:
    """The same error, of the same type, naming the object it happened to."""
    if error.object_id == object_id:
        return error
    return type(error)(error.reason, object_id)


class StorageFull(StorageError):
    """The backend has no room (disk full, quota or bucket limit); nothing was left behind."""


class StorageUnavailable(StorageError):
    """The backend cannot be reached right now (network, throttling); retrying may succeed."""
