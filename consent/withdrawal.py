"""Withdrawing a whole consent, or its optional modules; by the donor or with the receipt code.

Each function has one outcome: a whole withdrawal returns a ``Withdrawal``, a module
withdrawal the events it recorded. Every check runs before anything is written, so an error
records nothing. A withdrawal reaches the earlier consents the withdrawn one superseded
(they still cover the data given under them): the donor withdraws a purpose, not one version
of its wording.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from consent.codes import code_matches
from consent.errors import AlreadyWithdrawn, InvalidModule, NotActive, WrongWithdrawalCode
from consent.event_log import append_event
from consent.models import Consent, ConsentEvent
from consent.policy import EXPIRED, MODULE_WITHDRAWN, WITHDRAWN
from consent.queries import (
    get_consent,
    granted_modules,
    state,
    states,
    superseded_chain,
    template_of,
    withdrawn_modules,
)

STOP_USE = "stop_use"
ERASE = "erase"
WITHDRAWAL_MODES = (STOP_USE, ERASE)
CODE_HOLDER = "withdrawal-code"  # the audit actor of a withdrawal proven by the code alone


@dataclass(frozen=True)
class Withdrawal:
    """A full withdrawal: ``events[0]`` is the consent asked for, then those it superseded."""

    consent: Consent
    mode: str
    events: list[ConsentEvent]

    @property
    def event(self) -> ConsentEvent:
        return self.events[0]

    @property
    def consent_ids(self) -> list[str]:
        """Every consent whose data must stop being used (and be erased, in mode ``erase``)."""
        return [event.consent_id for event in self.events]


def withdraw_consent(
    session: Session, consent_id: str, *, mode: str = STOP_USE, actor: str | None = None
) -> Withdrawal:
    """Withdraw a whole consent, and the earlier consents it superseded (still in force).

    ``mode`` is ``stop_use`` (files kept, never used again) or ``erase`` (the caller shreds
    the files of every ID in ``Withdrawal.consent_ids`` in the same transaction).
    Raises AlreadyWithdrawn when the consent was withdrawn before; nothing changes then.
    """
    if mode not in WITHDRAWAL_MODES:
        raise ValueError(f"withdrawal mode must be one of {', '.join(WITHDRAWAL_MODES)}")
    consent = get_consent(session, consent_id)
    chain = superseded_chain(session, consent)
    current = states(session, [c.id for c in chain])
    if current[consent.id] == WITHDRAWN:
        raise AlreadyWithdrawn("This consent has already been withdrawn.")
    detail = {"mode": mode, "erase": mode == ERASE}
    recorded = []
    for item in chain:
        if current[item.id] == WITHDRAWN:
            continue
        item_detail = detail if item is consent else {**detail, "via": consent.id}
        recorded.append(
            append_event(session, item.id, WITHDRAWN, item_detail, actor or consent.subject_ref)
        )
    return Withdrawal(consent=consent, mode=mode, events=recorded)


def withdraw_modules(
    session: Session, consent_id: str, module_ids: Collection[str], *, actor: str | None = None
) -> list[ConsentEvent]:
    """Withdraw optional modules from the consent and from the earlier ones it superseded.

    Returns the events recorded (one at least), the consent's own first. A required module
    can only go with the whole consent (InvalidModule says so).
    """
    consent = get_consent(session, consent_id)
    chosen = sorted(set(module_ids))
    if not chosen:
        raise InvalidModule("Please choose the part(s) to withdraw.")
    modules = [_withdrawable_module(session, consent, module_id) for module_id in chosen]
    subject = actor or consent.subject_ref
    recorded = [
        append_event(session, consent.id, MODULE_WITHDRAWN, _module_detail(module), subject)
        for module in modules
    ]
    for earlier in superseded_chain(session, consent)[1:]:
        recorded += _withdraw_from_earlier(session, earlier, chosen, consent.id, subject)
    return recorded


def check_withdrawal_code(session: Session, consent_id: str, code: str) -> Consent:
    """The consent if ``code`` is its withdrawal code; UnknownConsent/WrongWithdrawalCode else."""
    consent = get_consent(session, consent_id)
    if not isinstance(code, str) or not code_matches(
        consent.id, code, consent.withdrawal_code_hash
    ):
        raise WrongWithdrawalCode("This withdrawal code does not belong to this consent.")
    return consent


def withdraw_consent_with_code(
    session: Session, consent_id: str, code: str, *, mode: str = STOP_USE
) -> Withdrawal:
    """Withdraw the whole consent without login, proven by the code from the signing receipt.

    Errors: UnknownConsent, WrongWithdrawalCode, AlreadyWithdrawn (the code was used for a
    full withdrawal already), ValueError for an unknown mode.
    """
    consent = check_withdrawal_code(session, consent_id, code)
    return withdraw_consent(session, consent.id, mode=mode, actor=CODE_HOLDER)


def withdraw_modules_with_code(
    session: Session, consent_id: str, code: str, module_ids: Collection[str]
) -> list[ConsentEvent]:
    """Withdraw optional modules without login, proven by the code from the signing receipt.

    Errors: UnknownConsent, WrongWithdrawalCode, AlreadyWithdrawn, NotActive, InvalidModule.
    """
    consent = check_withdrawal_code(session, consent_id, code)
    return withdraw_modules(session, consent.id, module_ids, actor=CODE_HOLDER)


def _module_detail(module: dict[str, Any]) -> dict[str, Any]:
    return {"module": module["id"], "duo": list(module.get("duo", []))}


def _withdrawable_module(session: Session, consent: Consent, module_id: str) -> dict[str, Any]:
    """The template's module ``module_id`` if it can be withdrawn alone; an error else."""
    current = state(session, consent.id)
    if current == WITHDRAWN:
        raise AlreadyWithdrawn("This consent has already been withdrawn.")
    if current == EXPIRED:
        raise NotActive("This consent has expired; there is nothing left to withdraw.")
    template = template_of(session, consent)
    module = next((m for m in template.modules if m["id"] == module_id), None)
    if module is None or module_id not in consent.modules:
        raise InvalidModule("This part was not agreed to in this consent.")
    if module_id in withdrawn_modules(session, consent.id):
        raise InvalidModule("This part has already been withdrawn.")
    if module.get("required"):
        raise InvalidModule(
            "This part is required for the consent; to withdraw it, withdraw the whole consent."
        )
    return module


def _withdraw_from_earlier(
    session: Session, earlier: Consent, chosen: Collection[str], via: str, actor: str
) -> list[ConsentEvent]:
    """Withdraw the ``chosen`` modules the superseded consent ``earlier`` still grants."""
    granted = set(granted_modules(session, earlier.id))
    return [
        append_event(
            session, earlier.id, MODULE_WITHDRAWN, {**_module_detail(module), "via": via}, actor
        )
        for module in template_of(session, earlier).modules
        if module["id"] in chosen and module["id"] in granted
    ]
