"""Consent records: signing rules, state derived from events, sealed signatures."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

import consent as consents
from consent import ConsentEvent, Sealer
from consent.templates import template_id

SEALER = Sealer(b"k" * 32)


@pytest.fixture
def template(db_session: Session) -> consents.ConsentTemplate:
    return consents.publish_template(db_session, consents.default_template_spec())


def sign(
    session: Session, template: consents.ConsentTemplate, subject: str = "user:1"
) -> consents.Consent:
    return consents.sign_consent(
        session,
        subject_ref=subject,
        template=template,
        modules={"research"},
        typed_name="Grace Hopper",
        sealer=SEALER,
    ).consent


def test_publishing_is_idempotent_and_identified_by_content(db_session: Session) -> None:
    spec = consents.default_template_spec()
    first = consents.publish_template(db_session, spec)
    again = consents.publish_template(db_session, dict(spec))
    assert first is again
    changed = consents.publish_template(db_session, {**spec, "version": "2"})
    assert changed.id != first.id == template_id(spec)


def test_signed_consent_is_active_and_seals_the_typed_name(
    db_session: Session, template: consents.ConsentTemplate
) -> None:
    record = sign(db_session, template)
    assert consents.state(db_session, record.id) == consents.ACTIVE
    assert consents.active_consent(db_session, "user:1") is record
    assert b"Grace" not in record.signature_sealed
    assert SEALER.open(record.signature_sealed, context=record.id) == "Grace Hopper"
    with pytest.raises(ValueError):
        SEALER.open(record.signature_sealed, context="another-consent")
    assert record.pseudonym.startswith("DONOR-")
    assert record.pseudonym != sign(db_session, template, "user:2").pseudonym


def test_withdrawal_is_an_event_and_cannot_happen_twice(
    db_session: Session, template: consents.ConsentTemplate
) -> None:
    record = sign(db_session, template)
    consents.withdraw_consent(db_session, record.id, mode=consents.ERASE)
    assert consents.state(db_session, record.id) == consents.WITHDRAWN
    assert consents.active_consent(db_session, "user:1") is None
    with pytest.raises(consents.AlreadyWithdrawn):
        consents.withdraw_consent(db_session, record.id, mode=consents.ERASE)
    kinds = db_session.scalars(
        select(ConsentEvent.kind)
        .where(ConsentEvent.consent_id == record.id)
        .order_by(ConsentEvent.id)
    ).all()
    assert kinds == ["given", "withdrawn"]


@pytest.mark.parametrize(
    ("modules", "name", "message"),
    [
        (set(), "Grace Hopper", "required"),
        ({"research", "marketing"}, "Grace Hopper", "Unknown"),
        ({"research"}, "   ", "full name"),
    ],
)
def test_invalid_signatures_are_refused(
    db_session: Session,
    template: consents.ConsentTemplate,
    modules: set[str],
    name: str,
    message: str,
) -> None:
    with pytest.raises(consents.InvalidSignature, match=message):
        consents.sign_consent(
            db_session,
            subject_ref="user:9",
            template=template,
            modules=modules,
            typed_name=name,
            sealer=SEALER,
        )


@given(st.text(min_size=1, max_size=200), st.text(min_size=1, max_size=50))
def test_sealing_round_trips_any_text(text: str, context: str) -> None:
    sealed = SEALER.seal(text, context)
    assert SEALER.open(sealed, context) == text
    if len(text) > 8:
        assert text.encode() not in sealed


def test_an_unknown_consent_id_has_no_state(
    db_session: Session, template: consents.ConsentTemplate
) -> None:
    record = sign(db_session, template)
    with pytest.raises(consents.UnknownConsent):
        consents.state(db_session, "no-such-consent")
    with pytest.raises(consents.UnknownConsent):
        consents.states(db_session, [record.id, "no-such-consent"])
    with pytest.raises(consents.UnknownConsent):
        consents.in_force(db_session, "no-such-consent")
    with pytest.raises(consents.UnknownConsent):
        consents.granted_modules(db_session, "no-such-consent")
    assert consents.states(db_session, []) == {}
    assert consents.states(db_session, [record.id]) == {record.id: consents.ACTIVE}
