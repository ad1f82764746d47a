"""Encrypted object storage: GA4GH Crypt4GH v1 at rest, one X25519 key pair per scope.

* Objects are Crypt4GH v1 files (64 KiB ChaCha20-Poly1305 segments, X25519
  header packets), readable by the reference ``crypt4gh`` tool.
* Each key scope (the portal uses one per consent, and one per upload
  quarantine) has its own X25519 key pair; the private key is kept only
  wrapped by a versioned master key (KEK, :class:`KeyRing` or any
  :class:`KeyEncryptionProvider`) in a :class:`KeyStore`.  Destroying the
  wrapped key crypto-shreds every copy of the scope's objects.
* A :class:`Backend` sees ciphertext and random object IDs only.
* Upload quarantine scopes carry their creation time; :func:`sweep_quarantine`
  destroys those (and unrecorded objects) that processing left behind.
* The plaintext size and SHA-256 (and those of the ciphertext) recorded in
  :class:`ObjectInfo` close the format's gap: it does not authenticate the
  order or number of segments.

Scope IDs are opaque strings to this library.
"""

from .backend import Backend, BackendWriter, LocalBackend, new_object_id
from .c4gh_format import SEGMENT_SIZE
from .errors import (
    IntegrityError,
    KeyUnavailable,
    ObjectNotFound,
    StorageError,
    StorageFull,
    StorageUnavailable,
)
from .keyfiles import (
    export_private_key_file,
    load_private_key_file,
    load_public_key_file,
    parse_public_key,
    public_key_file_text,
    write_public_key_file,
)
from .keyring import KeyEncryptionProvider, KeyRing
from .keystore import KeyStore, MemoryKeyStore, WrappedKey
from .quarantine import (
    SweepReport,
    is_quarantine_scope,
    new_quarantine_scope,
    quarantine_created_at,
    stale_quarantine_scopes,
    sweep_quarantine,
)
from .reader import DecryptingReader
from .rotation import key_status, retire_kek_version, rotate_keys
from .s3 import S3Backend
from .spool import EncryptedSpool
from .store import ObjectInfo, ObjectStore, ObjectWriter, VerifyReport

__all__ = [
    "SEGMENT_SIZE",
    "Backend",
    "BackendWriter",
    "DecryptingReader",
    "EncryptedSpool",
    "IntegrityError",
    "KeyEncryptionProvider",
    "KeyRing",
    "KeyStore",
    "KeyUnavailable",
    "LocalBackend",
    "MemoryKeyStore",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "ObjectWriter",
    "S3Backend",
    "StorageError",
    "StorageFull",
    "StorageUnavailable",
    "SweepReport",
    "VerifyReport",
    "WrappedKey",
    "export_private_key_file",
    "is_quarantine_scope",
    "key_status",
    "load_private_key_file",
    "load_public_key_file",
    "new_object_id",
    "new_quarantine_scope",
    "parse_public_key",
    "public_key_file_text",
    "quarantine_created_at",
    "retire_kek_version",
    "rotate_keys",
    "stale_quarantine_scopes",
    "sweep_quarantine",
    "write_public_key_file",
]
