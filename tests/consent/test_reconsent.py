"""Re-consent to a new template version, supersession, and expiry of consents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

import consent as consents


def publish_v2(session: Session, **changes: object) -> consents.ConsentTemplate:
    spec = {**consents.default_template_spec(), "version": "2", "body": "Second text.", **changes}
    return consents.publish_template(session, spec)


def renew_on_v2(
    session: Session, old: consents.Consent, sealer: consents.Sealer, modules: set[str]
) -> consents.SignedConsent:
    """The donor of ``old`` re-consents to a newly published second version."""
    return consents.reconsent(
        session,
        previous=old,
        template=publish_v2(session),
        modules=modules,
        typed_name="Grace Hopper",
        sealer=sealer,
    )


def test_a_new_version_asks_for_review_but_a_translation_does_not(
    db_session, template, sign
) -> None:
    signed = sign(template)
    assert consents.needs_review(db_session, "user:1") is None
    german = consents.publish_template(db_session, consents.default_template_specs()[1])
    assert consents.needs_review(db_session, "user:1", "de") is None
    newer = publish_v2(db_session)
    assert consents.needs_review(db_session, "user:1") is newer
    assert consents.needs_review(db_session, "user:1", "de") is None
    assert consents.needs_review(db_session, "user:without-consent") is None
    assert german.id != newer.id and signed.consent.template_id == template.id


def test_reconsent_supersedes_the_old_consent_which_stays_in_force(
    db_session, template, sign, sealer
) -> None:
    old = sign(template).consent
    newer = publish_v2(db_session)
    renewed = consents.reconsent(
        db_session,
        previous=old,
        template=newer,
        modules={"research"},
        typed_name="Grace Hopper",
        sealer=sealer,
    )
    assert renewed.consent.supersedes_id == old.id
    assert consents.state(db_session, old.id) == consents.SUPERSEDED
    assert consents.in_force(db_session, old.id)
    assert consents.granted_modules(db_session, old.id) == ["general_research", "research"]
    assert consents.active_consent(db_session, "user:1") is renewed.consent
    assert consents.needs_review(db_session, "user:1") is None
    assert consents.events(db_session, old.id)[-1].detail["by"] == renewed.consent.id
    assert renewed.withdrawal_code != ""
    with pytest.raises(consents.NotActive):
        consents.reconsent(
            db_session,
            previous=old,
            template=newer,
            modules={"research"},
            typed_name="Grace Hopper",
            sealer=sealer,
        )


def test_withdrawing_the_new_consent_withdraws_the_superseded_one(
    db_session, template, sign, sealer
) -> None:
    old = sign(template).consent
    renewed = renew_on_v2(db_session, old, sealer, {"research"})
    withdrawal = consents.withdraw_consent_with_code(
        db_session, renewed.consent.id, renewed.withdrawal_code, mode=consents.ERASE
    )
    assert withdrawal.consent_ids == [renewed.consent.id, old.id]
    states = consents.states(db_session, withdrawal.consent_ids)
    assert set(states.values()) == {consents.WITHDRAWN}
    assert consents.events(db_session, old.id)[-1].detail["via"] == renewed.consent.id


def test_withdrawing_a_module_of_the_new_consent_withdraws_it_from_the_superseded_one(
    db_session, template, sign, sealer
) -> None:
    old = sign(template).consent
    renewed = renew_on_v2(db_session, old, sealer, {"research", "general_research"})
    consents.withdraw_modules(db_session, renewed.consent.id, ["general_research"])
    assert consents.granted_modules(db_session, renewed.consent.id) == ["research"]
    assert consents.granted_modules(db_session, old.id) == ["research"]
    assert consents.events(db_session, old.id)[-1].detail["via"] == renewed.consent.id


def test_reconsent_to_the_same_version_is_refused(db_session, template, sign, sealer) -> None:
    old = sign(template).consent
    with pytest.raises(consents.InvalidSignature, match="already uses"):
        consents.reconsent(
            db_session,
            previous=old,
            template=template,
            modules={"research"},
            typed_name="Grace Hopper",
            sealer=sealer,
        )
    assert consents.state(db_session, old.id) == consents.ACTIVE


def test_consents_expire_after_the_templates_validity_days(db_session, sign) -> None:
    template = publish_v2(db_session, consent_valid_days=30)
    signed = sign(template)
    consent_id = signed.consent.id
    now = datetime.now(UTC)
    assert consents.state(db_session, consent_id) == consents.ACTIVE
    assert consents.expiring(db_session, timedelta(days=31)) == [signed.consent]
    assert consents.expiring(db_session, timedelta(days=29)) == []
    later = now + timedelta(days=31)
    assert consents.states(db_session, [consent_id], at=later)[consent_id] == consents.EXPIRED
    assert consent_id in consents.excluded_ids(db_session, at=later)
    assert consent_id not in consents.excluded_ids(db_session)
    assert consents.expire_due(db_session, at=now) == []
    recorded = consents.expire_due(db_session, at=later)
    assert [event.consent_id for event in recorded] == [consent_id]
    assert consents.expire_due(db_session, at=later) == []
    assert consents.state(db_session, consent_id) == consents.EXPIRED
    assert consents.granted_modules(db_session, consent_id) == []
    with pytest.raises(consents.NotActive):
        consents.withdraw_modules(db_session, consent_id, ["general_research"])
