"""Withdrawal: full (stop use / erase), per module, and with the code from the receipt."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session

import consent as consents
from consent import AuditEntry, ConsentEvent
from consent.codes import ALPHABET, code_hash, code_matches, normalize_code


def history(session: Session, consent_id: str) -> list[tuple[str, dict]]:
    return [(event.kind, event.detail) for event in consents.events(session, consent_id)]


def audit_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(AuditEntry)) or 0


def test_signing_issues_a_code_and_stores_only_its_hash(db_session, template, sign) -> None:
    signed = sign(template)
    code = signed.withdrawal_code
    assert len(normalize_code(code)) == 24 and set(normalize_code(code)) <= set(ALPHABET)
    assert signed.consent.withdrawal_code_hash == code_hash(signed.consent.id, code)
    assert normalize_code(code) not in signed.consent.withdrawal_code_hash
    assert sign(template, "user:2").withdrawal_code != code
    assert consents.check_withdrawal_code(db_session, signed.consent.id, code.lower())
    spaced = " ".join(normalize_code(code))
    assert consents.check_withdrawal_code(db_session, signed.consent.id, spaced)


@given(st.text(alphabet=ALPHABET + "-", min_size=1, max_size=40))
def test_a_code_only_matches_its_own_consent(code: str) -> None:
    stored = code_hash("consent-a", code)
    assert code_matches("consent-a", code, stored)
    assert not code_matches("consent-b", code, stored)
    assert not code_matches("consent-a", code + "A", stored)
    assert not code_matches("consent-a", code, None)


def test_withdrawing_with_the_code_records_the_mode(db_session, template, sign) -> None:
    signed = sign(template)
    withdrawal = consents.withdraw_consent_with_code(
        db_session, signed.consent.id, signed.withdrawal_code, mode=consents.ERASE
    )
    assert withdrawal.mode == consents.ERASE
    assert withdrawal.consent_ids == [signed.consent.id]
    assert consents.state(db_session, signed.consent.id) == consents.WITHDRAWN
    assert history(db_session, signed.consent.id)[-1] == (
        "withdrawn",
        {"mode": "erase", "erase": True},
    )
    assert consents.granted_modules(db_session, signed.consent.id) == []
    assert consents.duo_terms(db_session, signed.consent.id) == []
    assert signed.consent.id in consents.excluded_ids(db_session)


def test_bad_codes_and_ids_are_refused_without_any_change(db_session, template, sign) -> None:
    signed = sign(template)
    other = sign(template, "user:2")
    before_events, before_audit = history(db_session, signed.consent.id), audit_count(db_session)
    with pytest.raises(consents.UnknownConsent):
        consents.withdraw_consent_with_code(db_session, "no-such-consent", signed.withdrawal_code)
    with pytest.raises(consents.UnknownConsent):
        consents.withdraw_modules_with_code(
            db_session, "no-such-consent", signed.withdrawal_code, ["general_research"]
        )
    with pytest.raises(consents.WrongWithdrawalCode):
        consents.withdraw_consent_with_code(db_session, signed.consent.id, other.withdrawal_code)
    with pytest.raises(consents.WrongWithdrawalCode):
        consents.withdraw_consent_with_code(db_session, signed.consent.id, "")
    with pytest.raises(consents.WrongWithdrawalCode):
        consents.withdraw_modules_with_code(
            db_session, signed.consent.id, other.withdrawal_code, ["general_research"]
        )
    with pytest.raises(ValueError, match="mode"):
        consents.withdraw_consent_with_code(
            db_session, signed.consent.id, signed.withdrawal_code, mode="delete"
        )
    assert history(db_session, signed.consent.id) == before_events
    assert audit_count(db_session) == before_audit
    assert consents.state(db_session, signed.consent.id) == consents.ACTIVE


def test_a_code_cannot_be_used_twice(db_session, template, sign) -> None:
    signed = sign(template)
    consents.withdraw_consent_with_code(db_session, signed.consent.id, signed.withdrawal_code)
    before = history(db_session, signed.consent.id)
    with pytest.raises(consents.AlreadyWithdrawn):
        consents.withdraw_consent_with_code(
            db_session, signed.consent.id, signed.withdrawal_code, mode=consents.ERASE
        )
    with pytest.raises(consents.AlreadyWithdrawn):
        consents.withdraw_consent(db_session, signed.consent.id, mode=consents.ERASE)
    assert history(db_session, signed.consent.id) == before


def test_withdrawing_an_optional_module_narrows_the_duo_terms(db_session, template, sign) -> None:
    signed = sign(template)
    consent_id = signed.consent.id
    assert consents.granted_modules(db_session, consent_id) == ["general_research", "research"]
    assert "DUO:0000042" in consents.duo_terms(db_session, consent_id)
    [event] = consents.withdraw_modules(db_session, consent_id, ["general_research"])
    assert event.kind == "module_withdrawn" and event.detail["module"] == "general_research"
    assert consents.granted_modules(db_session, consent_id) == ["research"]
    assert consents.duo_terms(db_session, consent_id) == [
        "DUO:0000006",
        "DUO:0000019",
        "DUO:0000046",
    ]
    assert consents.state(db_session, consent_id) == consents.ACTIVE


def test_module_withdrawals_that_make_no_sense_are_refused(db_session, template, sign) -> None:
    signed = sign(template)
    only_required = sign(template, "user:2", modules=("research",))
    consents.withdraw_modules(db_session, signed.consent.id, ["general_research"])
    before = history(db_session, signed.consent.id)
    with pytest.raises(consents.InvalidModule, match="required"):
        consents.withdraw_modules(db_session, signed.consent.id, ["research"])
    with pytest.raises(consents.InvalidModule, match="already been withdrawn"):
        consents.withdraw_modules(db_session, signed.consent.id, ["general_research"])
    with pytest.raises(consents.InvalidModule, match="not agreed"):
        consents.withdraw_modules(db_session, only_required.consent.id, ["general_research"])
    with pytest.raises(consents.InvalidModule, match="not agreed"):
        consents.withdraw_modules(db_session, signed.consent.id, ["marketing"])
    with pytest.raises(consents.InvalidModule, match="choose"):
        consents.withdraw_modules(db_session, signed.consent.id, [])
    assert history(db_session, signed.consent.id) == before


def test_module_withdrawal_with_the_code_is_all_or_nothing(db_session, template, sign) -> None:
    signed = sign(template)
    with pytest.raises(consents.InvalidModule, match="required"):
        consents.withdraw_modules_with_code(
            db_session,
            signed.consent.id,
            signed.withdrawal_code,
            ["general_research", "research"],
        )
    assert [kind for kind, _ in history(db_session, signed.consent.id)] == ["given"]
    events = consents.withdraw_modules_with_code(
        db_session, signed.consent.id, signed.withdrawal_code, ["general_research"]
    )
    assert [event.kind for event in events] == ["module_withdrawn"]
    assert events[0].detail["module"] == "general_research"
    assert consents.state(db_session, signed.consent.id) == consents.ACTIVE
    consents.withdraw_consent_with_code(db_session, signed.consent.id, signed.withdrawal_code)
    with pytest.raises(consents.AlreadyWithdrawn):
        consents.withdraw_modules_with_code(
            db_session, signed.consent.id, signed.withdrawal_code, ["general_research"]
        )


def test_every_event_is_audited_and_the_typed_name_appears_nowhere(
    db_session, template, sign, typed_name
) -> None:
    signed = sign(template)
    consents.withdraw_modules(db_session, signed.consent.id, ["general_research"])
    consents.withdraw_consent(db_session, signed.consent.id, mode=consents.STOP_USE)
    entries = consents.audit.query(db_session, subject_id=signed.consent.id)
    assert [entry.action for entry in reversed(entries)] == [
        "consent.given",
        "consent.module_withdrawn",
        "consent.withdrawn",
    ]
    assert {entry.actor for entry in entries} == {"user:1"}
    stored = [event.detail for event in db_session.scalars(select(ConsentEvent))]
    stored += [(entry.detail, entry.actor) for entry in consents.audit.query(db_session)]
    for part in typed_name.split():
        assert part not in repr(stored)
    assert signed.withdrawal_code not in repr(stored)


def test_withdrawals_proven_by_the_code_are_audited_under_the_code_not_the_donor(
    db_session, template, sign
) -> None:
    signed = sign(template)
    consents.withdraw_modules_with_code(
        db_session, signed.consent.id, signed.withdrawal_code, ["general_research"]
    )
    consents.withdraw_consent_with_code(db_session, signed.consent.id, signed.withdrawal_code)
    entries = consents.audit.query(db_session, subject_id=signed.consent.id)
    actors = {entry.action: entry.actor for entry in entries}
    assert actors == {
        "consent.given": "user:1",
        "consent.module_withdrawn": "withdrawal-code",
        "consent.withdrawn": "withdrawal-code",
    }
