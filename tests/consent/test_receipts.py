"""Signed receipts: verifiable with the public key alone, any alteration detected."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

import consent as consents
from consent.canonical import canonical_json


@pytest.fixture
def signer() -> consents.ReceiptSigner:
    return consents.ReceiptSigner.generate("Test portal")


@pytest.fixture
def keys(signer: consents.ReceiptSigner) -> dict[str, Ed25519PublicKey]:
    return consents.public_keys(signer.public_jwks())


@pytest.fixture
def signed(template, sign) -> consents.SignedConsent:  # type: ignore[no-untyped-def]
    return sign(template)


@pytest.fixture
def receipt(
    db_session: Session, signed: consents.SignedConsent, signer: consents.ReceiptSigner
) -> dict[str, Any]:
    return consents.issue_receipt(
        db_session, signed.consent, signed.event, signer, signed.withdrawal_code
    )


def test_a_receipt_states_what_was_agreed_and_verifies(
    receipt: dict[str, Any], signed: consents.SignedConsent, keys, typed_name: str
) -> None:
    content = consents.verify_receipt(json.dumps(receipt), keys)
    assert content["consent_id"] == signed.consent.id
    assert content["template"]["sha256"] == signed.consent.template_id
    assert content["event"]["kind"] == "given"
    assert content["state"] == consents.ACTIVE
    assert {m["id"] for m in content["modules"]} == {"research", "general_research"}
    assert "DUO:0000042" in content["duo_terms"]
    assert content["withdrawal_code"] == signed.withdrawal_code
    assert typed_name not in json.dumps(receipt)


def test_the_signature_is_plain_ed25519_over_canonical_json(
    receipt: dict[str, Any], signer: consents.ReceiptSigner
) -> None:
    """Anyone can check it without this library: raw Ed25519, key from the JWK."""
    import base64

    jwk = signer.public_jwk()
    key = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(jwk["x"] + "="))
    signature = base64.urlsafe_b64decode(receipt["signature"]["value"] + "==")
    key.verify(signature, canonical_json(receipt["receipt"]))
    assert receipt["signature"]["kid"] == jwk["kid"]


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_changed_value_is_detected(receipt: dict[str, Any], keys, data) -> None:  # type: ignore[no-untyped-def]
    altered = json.loads(json.dumps(receipt))
    field = data.draw(st.sampled_from(sorted(altered["receipt"])))
    original = altered["receipt"][field]
    replacement = data.draw(st.one_of(st.text(max_size=20), st.integers(), st.none()))
    if replacement == original:
        replacement = [original]
    altered["receipt"][field] = replacement
    with pytest.raises(consents.InvalidReceipt):
        consents.verify_receipt(json.dumps(altered), keys)


def test_a_receipt_of_another_key_is_refused(receipt: dict[str, Any]) -> None:
    other = consents.public_keys(consents.ReceiptSigner.generate().public_jwks())
    with pytest.raises(consents.InvalidReceipt, match="not signed with a key of this portal"):
        consents.verify_receipt(receipt, other)


def test_a_forged_signature_under_the_right_key_id_is_refused(
    receipt: dict[str, Any], keys
) -> None:  # type: ignore[no-untyped-def]
    forger = consents.ReceiptSigner.generate()
    forged = consents.sign_receipt({**receipt["receipt"], "state": "active"}, forger)
    forged["signature"]["kid"] = receipt["signature"]["kid"]
    with pytest.raises(consents.InvalidReceipt, match="altered"):
        consents.verify_receipt(forged, keys)


@pytest.mark.parametrize(
    "document",
    [b"", b"not json", b"[1, 2]", b'{"receipt": {}}', b"{" * 70000, "\udcff"],
    ids=["empty", "text", "list", "no-signature", "huge", "bad-unicode"],
)
def test_malformed_receipts_are_refused_with_a_message(document, keys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(consents.InvalidReceipt):
        consents.verify_receipt(document, keys)


def test_a_withdrawal_receipt_records_the_new_state_without_the_code(
    db_session: Session, signed: consents.SignedConsent, signer, keys
) -> None:  # type: ignore[no-untyped-def]
    outcome = consents.withdraw_consent(db_session, signed.consent.id, mode=consents.ERASE)
    receipt = consents.issue_receipt(db_session, signed.consent, outcome.event, signer)
    content = consents.verify_receipt(receipt, keys)
    assert content["event"]["kind"] == "withdrawn"
    assert content["event"]["detail"]["mode"] == consents.ERASE
    assert content["state"] == consents.WITHDRAWN
    assert content["modules"] == []
    assert "withdrawal_code" not in content
