"""Signed consent receipts the donor can verify without us.

A receipt is JSON: ``{"receipt": {...}, "signature": {"alg": "EdDSA", "kid": ..., "value": ...}}``.
The signature is Ed25519 over the canonical JSON of ``receipt`` (sorted keys, no spaces), so
anyone holding the portal's published public key (a JWK Set) can check it with any Ed25519
library. It never holds the typed name; the withdrawal code appears only in the receipt
issued at signing, because only the donor should ever hold it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.orm import Session

from consent.canonical import canonical_json, iso_utc
from consent.db import utcnow
from consent.duo import duo_terms as duo_table
from consent.errors import InvalidReceipt
from consent.models import Consent, ConsentEvent, ConsentTemplate
from consent.queries import granted_modules, state
from consent.signing_keys import ReceiptSigner, b64url

RECEIPT_TYPE = "consent-receipt"
RECEIPT_VERSION = 1
MAX_RECEIPT_BYTES = 64 * 1024


def build_receipt(
    session: Session,
    consent: Consent,
    event: ConsentEvent,
    *,
    issuer: str,
    withdrawal_code: str | None = None,
) -> dict[str, Any]:
    """The receipt's content after ``event``: what is granted now, under which template."""
    template = session.get(ConsentTemplate, consent.template_id)
    assert template is not None  # noqa: S101 - guaranteed by the foreign key
    granted = set(granted_modules(session, consent.id))
    table = duo_table()
    modules = [
        {
            "id": module["id"],
            "title": module["title"],
            "required": bool(module.get("required")),
            "duo": [
                {"id": term, "label": table[term].label(template.language)}
                for term in module.get("duo", [])
                if term in table
            ],
        }
        for module in template.modules
        if module["id"] in granted
    ]
    payload: dict[str, Any] = {
        "type": RECEIPT_TYPE,
        "version": RECEIPT_VERSION,
        "issuer": issuer,
        "issued_at": iso_utc(utcnow()),
        "consent_id": consent.id,
        "pseudonym": consent.pseudonym,
        "template": {
            "sha256": template.id,
            "name": template.name,
            "version": template.version,
            "language": template.language,
            "title": template.title,
        },
        "event": {"kind": event.kind, "at": iso_utc(event.at), "detail": dict(event.detail)},
        "state": state(session, consent.id),
        "signed_at": iso_utc(consent.signed_at),
        "expires_at": iso_utc(consent.expires_at) if consent.expires_at else None,
        "modules": modules,
        "duo_terms": sorted({term["id"] for module in modules for term in module["duo"]}),
    }
    if withdrawal_code is not None:
        payload["withdrawal_code"] = withdrawal_code
    return payload


def sign_receipt(payload: Mapping[str, Any], signer: ReceiptSigner) -> dict[str, Any]:
    """The signed receipt document for ``payload``."""
    signature = signer.sign(canonical_json(dict(payload)))
    return {
        "receipt": dict(payload),
        "signature": {"alg": "EdDSA", "kid": signer.key_id, "value": b64url(signature)},
    }


def issue_receipt(
    session: Session,
    consent: Consent,
    event: ConsentEvent,
    signer: ReceiptSigner,
    withdrawal_code: str | None = None,
) -> dict[str, Any]:
    """Build and sign the receipt for ``event`` of ``consent``."""
    payload = build_receipt(
        session, consent, event, issuer=signer.issuer, withdrawal_code=withdrawal_code
    )
    return sign_receipt(payload, signer)


def public_keys(jwks: Mapping[str, Any]) -> dict[str, Ed25519PublicKey]:
    """The Ed25519 keys of a JWK Set by ``kid``."""
    keys = {}
    for jwk in jwks.get("keys", []):
        if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519" and "kid" in jwk:
            keys[jwk["kid"]] = Ed25519PublicKey.from_public_bytes(_b64url_decode(jwk["x"]))
    return keys


def verify_receipt(
    document: bytes | str | Mapping[str, Any], keys: Mapping[str, Ed25519PublicKey]
) -> dict[str, Any]:
    """The receipt's content if ``document`` is a receipt signed by one of ``keys``.

    Raises InvalidReceipt, with a message safe to show, for anything else.
    """
    parsed = _parse(document)
    receipt, signature = parsed.get("receipt"), parsed.get("signature")
    if not isinstance(receipt, dict) or not isinstance(signature, dict):
        raise InvalidReceipt("This is not a consent receipt: 'receipt' or 'signature' is missing.")
    if receipt.get("type") != RECEIPT_TYPE:
        raise InvalidReceipt("This is not a consent receipt of this portal.")
    if signature.get("alg") != "EdDSA":
        raise InvalidReceipt("The receipt's signature uses an algorithm this portal never uses.")
    key = keys.get(str(signature.get("kid")))
    if key is None:
        raise InvalidReceipt("The receipt was not signed with a key of this portal.")
    try:
        value = _b64url_decode(str(signature.get("value", "")))
        key.verify(value, canonical_json(receipt))
    except (InvalidSignature, ValueError) as exc:
        raise InvalidReceipt(
            "The signature does not match: the receipt was altered or is not genuine."
        ) from exc
    return receipt


def _parse(document: bytes | str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(document, Mapping):
        return dict(document)
    if len(document) > MAX_RECEIPT_BYTES:
        raise InvalidReceipt("The file is too large to be a consent receipt.")
    try:
        parsed = json.loads(document)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidReceipt("The file is not a consent receipt (it is not JSON).") from exc
    if not isinstance(parsed, dict):
        raise InvalidReceipt("The file is not a consent receipt.")
    return parsed


def _b64url_decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc
