"""Withdrawal codes: random, shown once to the donor, stored only as a hash bound to the consent.

A code has 120 random bits, so a plain SHA-256 is enough to store it (no slow password hash
is needed against guessing); comparison is constant-time. Rate limiting guesses is the
portal's job.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
_GROUPS = 6
_GROUP_SIZE = 4


def new_withdrawal_code() -> str:
    """E.g. ``K7QX-M2PA-...``: six groups of four characters without look-alikes (0/O, 1/I)."""
    chars = "".join(secrets.choice(ALPHABET) for _ in range(_GROUPS * _GROUP_SIZE))
    return "-".join(chars[i : i + _GROUP_SIZE] for i in range(0, len(chars), _GROUP_SIZE))


def normalize_code(code: str) -> str:
    """Case, spaces and dashes do not matter when a donor types the code back."""
    return "".join(ch for ch in code.upper() if ch not in " -\t\r\n")


def code_hash(consent_id: str, code: str) -> str:
    material = f"consent-withdrawal-code:{consent_id}:{normalize_code(code)}"
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def code_matches(consent_id: str, code: str, stored_hash: str | None) -> bool:
    if not stored_hash:
        return False
    return hmac.compare_digest(code_hash(consent_id, code), stored_hash)
