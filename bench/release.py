"""Releasing 2,000 files to a researcher: Crypt4GH header rewrite only, never re-encryption.

Stores N small objects (default 2,000 x 256 KiB) under one consent scope, then times
``ObjectStore.reencrypt_for`` over all of them (new header, data segments copied unchanged)
against a baseline measured in the same run: copying the same stored ciphertext bytes.
A ratio near 1 means a release costs what copying the files costs.

    .venv/bin/python bench/release.py [--files 2000] [--size-kib 256]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

# Run as a script, this folder (holding bench/storage.py) would shadow the storage package.
sys.path[0] = str(Path(__file__).resolve().parent.parent)
from storage import KeyRing, LocalBackend, MemoryKeyStore, ObjectStore  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--size-kib", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        backend = LocalBackend(Path(work) / "objects")
        store = ObjectStore(backend, KeyRing.generate(), MemoryKeyStore())
        store.ensure_scope("consent-1")
        infos = [
            store.put("consent-1", io.BytesIO(os.urandom(args.size_kib * 1024)))
            for _ in range(args.files)
        ]
        recipient = (
            X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        )
        total = sum(info.stored_size for info in infos)

        start = time.perf_counter()
        for info in infos:
            with backend.open(info.object_id) as raw:
                while raw.read(1 << 20):
                    pass
        copy_seconds = time.perf_counter() - start

        start = time.perf_counter()
        for info in infos:
            digest = hashlib.sha256()
            with backend.open(info.object_id) as raw:
                while chunk := raw.read(1 << 20):
                    digest.update(chunk)
        hash_seconds = time.perf_counter() - start

        start = time.perf_counter()
        for info in infos:
            for _chunk in store.reencrypt_for(info, recipient):
                pass
        release_seconds = time.perf_counter() - start

    mib = total / 2**20
    print(f"files: {args.files} x {args.size_kib} KiB ({mib:.0f} MiB of ciphertext)")
    print(f"copy ciphertext (baseline): {copy_seconds:.2f} s, {mib / copy_seconds:.0f} MiB/s")
    print(
        f"release (header rewrite):   {release_seconds:.2f} s, {mib / release_seconds:.0f} MiB/s,"
        f" {args.files / release_seconds:.0f} files/s"
    )
    print(f"copy + SHA-256 (the integrity check every release does): {hash_seconds:.2f} s")
    print(f"ratio release / copy: {release_seconds / copy_seconds:.2f}")
    print(f"ratio release / (copy + SHA-256): {release_seconds / hash_seconds:.2f}")


if __name__ == "__main__":
    main()
