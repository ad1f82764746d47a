"""What a consent's history means: its state, and the modules it still grants.

Pure functions of the recorded facts (the kinds of its events, its expiry, the moment asked
about), so the rules read and test without a database; ``consent.queries`` feeds them from
the tables. Events are append-only, so a state is never stored: it is derived here.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime

from consent.canonical import as_utc
from consent.errors import UnknownConsent

# event kinds
GIVEN = "given"
MODULE_WITHDRAWN = "module_withdrawn"
WITHDRAWN = "withdrawn"
EXPIRED = "expired"
SUPERSEDED = "superseded"

# states: ACTIVE, or the kind of the event that ended or replaced the consent
ACTIVE = "active"
IN_FORCE = (ACTIVE, SUPERSEDED)  # data given under the consent may still be used
ENDED = (WITHDRAWN, EXPIRED)  # the consent grants nothing any more


def derive_state(kinds: Collection[str], expires_at: datetime | None, at: datetime) -> str:
    """The state after events of ``kinds``: withdrawn > expired > superseded > active.

    A consent past its ``expires_at`` is expired even before an ``expired`` event is
    recorded: the sweep that records it (``expire_due``) runs only now and then.
    """
    if WITHDRAWN in kinds:
        return WITHDRAWN
    if EXPIRED in kinds or (expires_at is not None and as_utc(expires_at) <= as_utc(at)):
        return EXPIRED
    if SUPERSEDED in kinds:
        return SUPERSEDED
    return ACTIVE


def derive_states(
    consent_ids: Iterable[str],
    expiry: Mapping[str, datetime | None],
    kinds: Mapping[str, Collection[str]],
    at: datetime,
) -> dict[str, str]:
    """The state of each consent; ``expiry`` has an entry for every consent that exists.

    An ID ``expiry`` lacks raises UnknownConsent: a consent nobody gave has no state, and
    calling it active would let data be used under it.
    """
    result = {}
    for consent_id in consent_ids:
        if consent_id not in expiry:
            raise UnknownConsent()
        result[consent_id] = derive_state(kinds.get(consent_id, ()), expiry[consent_id], at)
    return result


def modules_in_force(signed: Sequence[str], withdrawn: Collection[str], state: str) -> list[str]:
    """The modules signed, minus those withdrawn since; none once the consent has ended."""
    if state in ENDED:
        return []
    return [module for module in signed if module not in withdrawn]
