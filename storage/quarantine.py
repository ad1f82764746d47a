"""Quarantine scopes (raw uploads) and the sweep that destroys the ones processing left behind.

An upload is encrypted as it arrives to a key scope of its own, read back for
de-identification, and its objects and key are destroyed when processing ends.
If processing never ends (the process is killed, a request hangs, a shred
fails), :func:`sweep_quarantine` finishes the job after a configurable time:

* quarantine scope keys older than the limit are destroyed (crypto-shredding
  every copy of their objects), whatever happened to their objects;
* backend objects nobody recorded (``recorded_object_ids``: every object the
  caller's database still references) and not written for longer than the
  limit are deleted - raw quarantine objects are never recorded, so these are
  they, plus objects whose recording transaction rolled back;
* a backend's stale temporary files of interrupted writes are removed.

Quarantine scope IDs carry their creation time, ``quarantine-<unix seconds
hex>-<random hex>`` (54 characters), so the age of a key is known without any
column besides the scope ID.  A ``quarantine-`` scope without a readable time
(created by an older version) is always treated as stale: quarantine keys are
destroyed by the request that created them, so one that outlives it is left
over.  The limit must exceed the longest upload processing, or a sweep would
destroy an upload being processed (that request then fails with
KeyUnavailable or ObjectNotFound; nothing is corrupted).
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import ObjectNotFound, StorageError

if TYPE_CHECKING:
    from .store import ObjectStore

QUARANTINE_PREFIX = "quarantine-"
_DATED = re.compile(r"quarantine-([0-9a-f]{1,16})-[0-9a-f]{32}")


def new_quarantine_scope(now: float | None = None) -> str:
    """A fresh quarantine scope ID that records when it was made."""
    created = int(time.time() if now is None else now)
    return f"{QUARANTINE_PREFIX}{created:010x}-{secrets.token_hex(16)}"


def is_quarantine_scope(scope_id: str) -> bool:
    return scope_id.startswith(QUARANTINE_PREFIX)


def quarantine_created_at(scope_id: str) -> float | None:
    """Creation time (Unix seconds) of a quarantine scope; None if it carries none."""
    match = _DATED.fullmatch(scope_id)
    return float(int(match.group(1), 16)) if match else None


@dataclass
class SweepReport:
    """What :func:`sweep_quarantine` destroyed (or, in a dry run, would destroy)."""

    shredded_scopes: list[str] = field(default_factory=list)
    deleted_objects: list[str] = field(default_factory=list)
    removed_partials: int = 0
    dry_run: bool = False


def stale_quarantine_scopes(
    store: ObjectStore, older_than_seconds: float, now: float | None = None
) -> list[str]:
    """Quarantine scopes with a key, created before ``now - older_than_seconds``."""
    limit = (time.time() if now is None else now) - older_than_seconds
    stale = []
    for key in store.keystore.all():
        if is_quarantine_scope(key.scope_id):
            created = quarantine_created_at(key.scope_id)
            if created is None or created < limit:
                stale.append(key.scope_id)
    return sorted(stale)


def sweep_quarantine(
    store: ObjectStore,
    recorded_object_ids: Iterable[str],
    older_than_seconds: float,
    *,
    now: float | None = None,
    dry_run: bool = False,
) -> SweepReport:
    """Destroy stale quarantine keys, then unrecorded objects and partial writes older
    than ``older_than_seconds``; see the module docstring.

    Keys go first (as in :meth:`ObjectStore.shred_scope`); with a database key
    store the caller commits the key deletions.  ``dry_run`` only reports.
    """
    if older_than_seconds < 0:
        raise StorageError("the sweep age limit cannot be negative")
    now = time.time() if now is None else now
    limit = now - older_than_seconds
    report = SweepReport(dry_run=dry_run)
    report.shredded_scopes = stale_quarantine_scopes(store, older_than_seconds, now)
    if not dry_run:
        for scope_id in report.shredded_scopes:
            store.keystore.destroy(scope_id)
    recorded = set(recorded_object_ids)
    for object_id in list(store.backend.list()):
        if object_id in recorded:
            continue
        try:
            if store.backend.modified(object_id) >= limit:
                continue
            if not dry_run:
                store.backend.delete(object_id)
        except ObjectNotFound:  # deleted meanwhile
            continue
        report.deleted_objects.append(object_id)
    remove_partials = getattr(store.backend, "remove_stale_partials", None)
    if remove_partials is not None and not dry_run:
        report.removed_partials = remove_partials(older_than_seconds)
    return report
