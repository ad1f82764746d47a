"""KEK rotation and retirement: re-wrap the scope keys, never touch a data file.

Crash-safe order for a rotation (what ``flask ... keys rotate`` should do)::

    rotate_keys(keyring, keystore, save_to=key_file)   # 1. file gets the new version
    session.commit()                                    # 2. re-wrapped keys committed
    ... later: retire_kek_version(keyring, keystore, old); keyring.save(key_file)

The key file must hold the new version *before* the transaction commits keys
wrapped under it; otherwise a crash between the two leaves keys wrapped under
a KEK that exists nowhere.  Old versions stay in the file until retired, so a
crash or rollback at any point leaves every key readable.  (Saving after the
commit is only safe if the process cannot die in between - do not rely on it.)
"""

from __future__ import annotations

import os
from collections import Counter

from . import scope_keys
from .errors import StorageError
from .keyring import KeyRing
from .keystore import KeyStore


def rotate_keys(
    keyring: KeyRing, keystore: KeyStore, *, save_to: str | os.PathLike[str] | None = None
) -> int:
    """Add a KEK version and re-wrap every scope key under it; return how many.

    With ``save_to`` the key file is written (atomically, old versions kept)
    before any key is re-wrapped, which is the crash-safe order.
    """
    version = keyring.add_version()
    if save_to is not None:
        keyring.save(save_to)
    count = 0
    for key in list(keystore.all()):
        if key.kek_version != version:
            keystore.replace(scope_keys.rewrap(keyring, key, version))
            count += 1
    return count


def key_status(keyring: KeyRing, keystore: KeyStore) -> dict[int, int]:
    """Number of wrapped scope keys per KEK version (every version of the ring listed).

    A version present in the key store but not in the ring maps to its count
    too, so ``set(result) - set(keyring.versions())`` shows unreadable keys.
    """
    counts = Counter(key.kek_version for key in keystore.all())
    return {v: counts.get(v, 0) for v in sorted(set(keyring.versions()) | set(counts))}


def retire_kek_version(keyring: KeyRing, keystore: KeyStore, version: int) -> None:
    """Retire a KEK version, refusing while any scope key is still wrapped under it."""
    in_use = sum(1 for key in keystore.all() if key.kek_version == version)
    if in_use:
        raise StorageError(f"KEK version {version} still wraps {in_use} scope key(s)")
    keyring.retire(version)
