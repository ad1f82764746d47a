"""The consent policy: the state a consent's events and expiry mean, with no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consent import policy
from consent.errors import UnknownConsent

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
KINDS = [
    policy.GIVEN,
    policy.MODULE_WITHDRAWN,
    policy.SUPERSEDED,
    policy.EXPIRED,
    policy.WITHDRAWN,
]


@pytest.mark.parametrize(
    ("kinds", "expires_at", "expected"),
    [
        ([policy.GIVEN], None, policy.ACTIVE),
        ([policy.GIVEN, policy.MODULE_WITHDRAWN], None, policy.ACTIVE),
        ([policy.GIVEN], NOW + timedelta(seconds=1), policy.ACTIVE),
        ([policy.GIVEN, policy.SUPERSEDED], None, policy.SUPERSEDED),
        ([policy.GIVEN], NOW, policy.EXPIRED),  # due, before the sweep records it
        ([policy.GIVEN, policy.EXPIRED], None, policy.EXPIRED),
        ([policy.GIVEN, policy.SUPERSEDED], NOW - timedelta(days=1), policy.EXPIRED),
        ([policy.GIVEN, policy.WITHDRAWN], None, policy.WITHDRAWN),
        ([policy.GIVEN, policy.EXPIRED, policy.WITHDRAWN], NOW, policy.WITHDRAWN),
        ([policy.GIVEN, policy.SUPERSEDED, policy.WITHDRAWN], None, policy.WITHDRAWN),
    ],
)
def test_the_state_is_the_strongest_event_withdrawn_expired_superseded_active(
    kinds: list[str], expires_at: datetime | None, expected: str
) -> None:
    assert policy.derive_state(kinds, expires_at, NOW) == expected


def test_expiry_compares_instants_whatever_the_stored_time_zone() -> None:
    naive_utc = datetime(2026, 6, 1, 12)  # SQLite hands back naive UTC datetimes
    assert policy.derive_state([policy.GIVEN], naive_utc, NOW) == policy.EXPIRED
    assert policy.derive_state([policy.GIVEN], naive_utc, NOW - timedelta(seconds=1)) == (
        policy.ACTIVE
    )


@given(st.lists(st.sampled_from(KINDS)), st.booleans())
def test_a_withdrawn_consent_stays_withdrawn_whatever_else_happened(
    kinds: list[str], lapsed: bool
) -> None:
    expires_at = NOW - timedelta(days=1) if lapsed else None
    state = policy.derive_state([*kinds, policy.WITHDRAWN], expires_at, NOW)
    assert state == policy.WITHDRAWN
    assert state not in policy.IN_FORCE


def test_states_of_several_consents() -> None:
    expiry = {"a": None, "b": NOW - timedelta(days=1), "c": None}
    kinds = {"a": [policy.GIVEN], "b": [policy.GIVEN], "c": [policy.GIVEN, policy.WITHDRAWN]}
    assert policy.derive_states(["a", "b", "c"], expiry, kinds, NOW) == {
        "a": policy.ACTIVE,
        "b": policy.EXPIRED,
        "c": policy.WITHDRAWN,
    }
    assert policy.derive_states([], expiry, kinds, NOW) == {}


def test_an_unknown_consent_id_is_an_error_never_active() -> None:
    expiry = {"known": None}
    kinds = {"known": [policy.GIVEN], "ghost": [policy.GIVEN]}
    with pytest.raises(UnknownConsent, match="No consent has this ID"):
        policy.derive_states(["known", "ghost"], expiry, kinds, NOW)
    with pytest.raises(UnknownConsent):
        policy.derive_states(["ghost"], {}, {}, NOW)


def test_a_consent_without_events_is_known_by_its_expiry_entry() -> None:
    assert policy.derive_states(["new"], {"new": None}, {}, NOW) == {"new": policy.ACTIVE}


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (policy.ACTIVE, ["research"]),
        (policy.SUPERSEDED, ["research"]),  # still covers the data given under it
        (policy.EXPIRED, []),
        (policy.WITHDRAWN, []),
    ],
)
def test_modules_in_force_are_those_signed_minus_those_withdrawn_until_the_end(
    state: str, expected: list[str]
) -> None:
    signed = ["general_research", "research"]
    assert policy.modules_in_force(signed, {"general_research"}, state) == expected
