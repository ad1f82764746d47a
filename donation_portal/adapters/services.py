"""Wiring of the libraries for the current app: storage, keys, the de-identification secret.

Loaded once per app and cached in ``app.extensions``; nothing is created at import time.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, current_app
from sqlalchemy.orm import Session

from consent import ReceiptSigner, Sealer
from donation_portal.adapters.keyfiles import read_secret_file
from donation_portal.adapters.keystore import DatabaseKeyStore
from storage import KeyRing, LocalBackend, ObjectStore


def _cached(app: Flask, name: str, build: Any) -> Any:
    cache = app.extensions.setdefault("portal_services", {})
    if name not in cache:
        cache[name] = build()
    return cache[name]


def keyring() -> KeyRing:
    """The KEK ring, reloaded when its key file changes.

    `keys rotate` and `keys retire` run in another process than the web workers; without
    the reload a worker would keep unwrapping with the versions it loaded at start-up and
    fail on every key re-wrapped under the new version.
    """
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if app.config.get("KEK"):
        return _cached(app, "keyring", lambda: KeyRing.from_env(app.config["KEK"]))
    path = app.config["KEY_FILE"]
    stamp = _file_stamp(path)
    cache = app.extensions.setdefault("portal_services", {})
    loaded = cache.get("keyring")
    if loaded is None or loaded[0] != stamp:
        cache["keyring"] = loaded = (stamp, KeyRing.load(path))
    return loaded[1]


def _file_stamp(path: str) -> tuple[int, int, int]:
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return (0, 0, 0)
    return (status.st_mtime_ns, status.st_size, status.st_ino)


def backend() -> LocalBackend:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    return _cached(app, "backend", lambda: LocalBackend(app.config["STORAGE_DIR"]))


def object_store(session: Session) -> ObjectStore:
    """An object store whose keys live in ``session``'s transaction."""
    return ObjectStore(backend(), keyring(), DatabaseKeyStore(session))


def deid_key() -> bytes:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    return _cached(app, "deid_key", lambda: read_secret_file(app.config["DEID_KEY_FILE"]))


def sealer() -> Sealer:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    return _cached(app, "sealer", lambda: Sealer(read_secret_file(app.config["SEAL_KEY_FILE"])))


def receipt_signer() -> ReceiptSigner:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    return _cached(
        app,
        "receipt_signer",
        lambda: ReceiptSigner.load(app.config["RECEIPT_KEY_FILE"], app.config["RECEIPT_ISSUER"]),
    )


def forget(app: Flask) -> None:
    """Drop cached keys, e.g. after the key ring changed on disk."""
    app.extensions.pop("portal_services", None)
