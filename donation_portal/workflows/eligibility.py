"""Which donated files a stated research use may receive: the single place for that rule.

A file is eligible when it was accepted by de-identification (or cleared by a steward), its
donation was approved by a steward, its consent is in force (neither withdrawn nor expired)
and the consent's DUO terms permit the use (``consent.duo_matching``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

import consent as consents
from consent import duo_matching
from consent.duo import DuoTerm, duo_terms
from donation_portal.adapters.models import REVIEW_APPROVED, DonatedFile, Donation
from donation_portal.workflows.ingest import ACCEPTED


@dataclass(frozen=True)
class MatchCount:
    donors: int
    studies: int
    files: int


def research_use(use: Mapping[str, Any]) -> duo_matching.ResearchUse:
    """The library's ResearchUse for a request's stored ``use``; ValueError when invalid."""
    return duo_matching.ResearchUse(
        purpose=use["purpose"],
        disease=use.get("disease") or None,
        commercial=bool(use.get("commercial")),
        not_for_profit=bool(use.get("not_for_profit")),
        publishes=bool(use.get("publishes")),
        methods_development=bool(use.get("methods_development")),
        ethics_approved=bool(use.get("ethics_approved")),
    )


def eligible_files(
    session: Session, use: Mapping[str, Any], filters: Mapping[str, Any]
) -> list[DonatedFile]:
    """The files the use may receive now, in a stable order."""
    wanted = research_use(use)
    query = (
        select(DonatedFile)
        .join(Donation, Donation.id == DonatedFile.donation_id)
        .where(
            DonatedFile.status == ACCEPTED,
            DonatedFile.object_id.is_not(None),
            Donation.review_status == REVIEW_APPROVED,
        )
        .order_by(DonatedFile.id)
    )
    query = _filtered(query, filters)
    files = list(session.scalars(query))
    allowed = permitting(session, {f.consent_id for f in files}, wanted)
    return [f for f in files if f.consent_id in allowed]


def permitting(
    session: Session, consent_ids: Collection[str], wanted: duo_matching.ResearchUse
) -> set[str]:
    """The consents among ``consent_ids`` in force now whose DUO terms permit ``wanted``.

    Checked again at every download: withdrawing one module (say, commercial use) keeps the
    consent in force but can take a release's use away from it.
    """
    allowed = set()
    for consent_id in set(consent_ids) - consents.excluded_ids(session):
        terms = consents.duo_terms(session, consent_id)
        if duo_matching.permits(terms, wanted, _diseases(session, consent_id)):
            allowed.add(consent_id)
    return allowed


def _filtered(query: Select[DonatedFile], filters: Mapping[str, Any]) -> Select[DonatedFile]:
    """Cohort filters: lists match any listed value; ranges are inclusive, and a file without
    the value (say, no age in its header) does not match a range that asks for one."""
    for key, column in (
        ("modalities", DonatedFile.modality),
        ("body_parts", DonatedFile.body_part),
        ("sexes", DonatedFile.patient_sex),
    ):
        if values := filters.get(key):
            query = query.where(column.in_(values))
    for key, number in (
        ("age", DonatedFile.patient_age_years),
        ("study_year", DonatedFile.study_year),
    ):
        if (low := filters.get(f"{key}_min")) is not None:
            query = query.where(number >= low)
        if (high := filters.get(f"{key}_max")) is not None:
            query = query.where(number <= high)
    return query


def _diseases(session: Session, consent_id: str) -> set[str]:
    """The diseases the consent's granted modules name (for DUO:0000007)."""
    consent = consents.get_consent(session, consent_id)
    template = session.get(consents.ConsentTemplate, consent.template_id)
    granted = set(consents.granted_modules(session, consent_id))
    modules = template.modules if template is not None else []
    return {code for m in modules if m["id"] in granted for code in m.get("diseases", [])}


# The DUO permission term that covers each purpose a researcher can state: what a steward
# compares with the donors' consents when deciding on a request.
PURPOSE_TERMS = {
    duo_matching.GENERAL: duo_matching.GRU,
    duo_matching.HEALTH: duo_matching.HMB,
    duo_matching.DISEASE: duo_matching.DS,
    duo_matching.ANCESTRY: duo_matching.POA,
}
# The DUO modifier each declaration of a use answers (commercial use against NCU, a
# commitment to publish for PUB, ...): a steward checks the declarations against these.
DECLARATION_TERMS = {
    "commercial": duo_matching.NCU,
    "not_for_profit": duo_matching.NPU,
    "publishes": duo_matching.PUB,
    "methods_development": duo_matching.NMDS,
    "ethics_approved": duo_matching.IRB,
}


def duo_term(term_id: str) -> DuoTerm | None:
    """The supported DUO term with its labels, so a page names a code in words."""
    return duo_terms().get(term_id)


def count(files: list[DonatedFile]) -> MatchCount:
    """How many donors, studies and files a request would receive (stewards and researchers
    judge a cohort by its size before anything is released)."""
    return MatchCount(
        donors=len({f.consent_id for f in files}),
        studies=len({f.study_instance_uid for f in files}),
        files=len(files),
    )
