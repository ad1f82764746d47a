"""Maintenance use cases: finishing what a committed unit of work left to do.

- :func:`delete_objects` deletes the objects of rows a committed transaction removed; a
  failure is logged by object ID and never turns the committed change into an error.

Plain Python: no Flask; the caller passes the object store.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from storage import ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)


def delete_objects(store: ObjectStore, object_ids: Iterable[str]) -> list[str]:
    """Delete objects whose rows are already gone, after the commit that removed them;
    returns those that could not be deleted.

    A failure is logged by object ID and left for a later clean-up: a committed
    change must never become an error because its clean-up failed. An object already gone
    is what was wanted.
    """
    failed: list[str] = []
    for object_id in object_ids:
        _delete(store, object_id, failed)
    return failed


def _delete(store: ObjectStore, object_id: str, failed: list[str]) -> bool:
    """Delete one object; False (and logged, and added to ``failed``) if that failed."""
    try:
        store.delete(object_id)
    except ObjectNotFound:
        return True
    except Exception:  # noqa: BLE001 - any storage failure; a later clean-up retries
        log.warning("could not delete object %s; a later clean-up retries", object_id,
                    exc_info=True)
        failed.append(object_id)
        return False
    return True
