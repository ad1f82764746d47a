"""Keyed, deterministic derivations from the deployment secret: UIDs and date offsets."""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache

# defined in pydicom._uid_dict and re-exported by pydicom.uid without __all__
from pydicom.uid import UID_dictionary  # type: ignore[attr-defined]

from anonymize.outcome import DeidentificationError

MIN_KEY_BYTES = 32
DICOM_ROOT = "1.2.840.10008."
# Coding-scheme and context identifiers that are public vocabularies, not instances.
PUBLIC_OID_ROOTS = ("2.16.840.1.113883.6.", "2.16.840.1.113883.4.642.", "1.2.840.10008.")
# Earliest and latest shift, in days: always backwards, never zero.
MIN_SHIFT_DAYS = 365
MAX_SHIFT_DAYS = 3652


def check_key(key: bytes) -> bytes:
    """Refuse keys that would make the UID mapping guessable."""
    if not isinstance(key, bytes | bytearray) or len(key) < MIN_KEY_BYTES:
        raise DeidentificationError(f"key must be at least {MIN_KEY_BYTES} bytes")
    return bytes(key)


def is_registered_uid(value: str) -> bool:
    """A UID defined by the DICOM standard (SOP classes, transfer syntaxes, ...)."""
    return value.startswith(DICOM_ROOT) or value in UID_dictionary


def is_public_oid(value: str) -> bool:
    """A registered UID or a public coding-scheme OID (HL7 code systems)."""
    return is_registered_uid(value) or value.startswith(PUBLIC_OID_ROOTS)


@lru_cache(maxsize=1024)
def donor_uid_key(key: bytes, pseudonym: str) -> bytes:
    """The key of one donor's UIDs, derived from the deployment secret and the pseudonym.

    Keyed by donor so that two donors who give the same study (a shared CD, a family
    upload) do not get the same Study, Series, SOP Instance and Frame of Reference UIDs: equal
    UIDs would link their donations. The same donor gets the same UIDs in every upload.
    """
    return hmac.new(key, b"uid-donor\x00" + pseudonym.encode("utf-8"), hashlib.sha256).digest()


@lru_cache(maxsize=65536)
def _remap(key: bytes, value: str) -> str:
    digest = hmac.new(key, b"uid\x00" + value.encode("ascii", "replace"), hashlib.sha256)
    return "2.25." + str(int.from_bytes(digest.digest()[:16], "big"))


def remap_uid(key: bytes, value: str) -> str:
    """Replace an instance UID by ``2.25.<128-bit HMAC>``; registered UIDs are kept.

    ``key`` is a donor's UID key (:func:`donor_uid_key`): the same UID maps to the same
    output for the same donor, in every file and every run, and to another for another donor.
    """
    value = value.strip().rstrip("\x00")
    if not value or is_registered_uid(value):
        return value
    return _remap(key, value)


def date_shift_days(key: bytes, pseudonym: str) -> int:
    """The donor's date offset (negative days), derived from the key and the pseudonym."""
    digest = hmac.new(key, b"date\x00" + pseudonym.encode("utf-8"), hashlib.sha256).digest()
    span = MAX_SHIFT_DAYS - MIN_SHIFT_DAYS + 1
    return -(MIN_SHIFT_DAYS + int.from_bytes(digest[:8], "big") % span)
