"""Fixtures of the consent tests: templates derived from the shipped default, signing helper.

pytest runs with --import-mode=importlib, so helpers are fixtures rather than imports.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.orm import Session

import consent as consents

TYPED_NAME = "Grace Brewster Hopper"
Signer = Callable[..., consents.SignedConsent]


def _spec_with(**changes: Any) -> dict[str, Any]:
    return {**consents.default_template_spec(), **changes}


@pytest.fixture
def spec_with() -> Callable[..., dict[str, Any]]:
    """The English default spec with some fields replaced."""
    return _spec_with


@pytest.fixture
def sealer() -> consents.Sealer:
    return consents.Sealer(b"k" * 32)


@pytest.fixture
def typed_name() -> str:
    return TYPED_NAME


@pytest.fixture
def template(db_session: Session) -> consents.ConsentTemplate:
    return consents.publish_template(db_session, consents.default_template_spec())


@pytest.fixture
def sign(db_session: Session, sealer: consents.Sealer) -> Signer:
    """Sign ``template`` for ``subject`` with both default modules unless told otherwise."""

    def _sign(
        template: consents.ConsentTemplate,
        subject: str = "user:1",
        modules: tuple[str, ...] = ("research", "general_research"),
    ) -> consents.SignedConsent:
        return consents.sign_consent(
            db_session,
            subject_ref=subject,
            template=template,
            modules=modules,
            typed_name=TYPED_NAME,
            sealer=sealer,
        )

    return _sign
