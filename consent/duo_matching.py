"""Does a consent's set of GA4GH DUO terms allow a stated research use? One place for the rules.

The rules follow the DUO definitions (and the GA4GH Data Use Oracle): a permission says which
research is allowed, every modifier adds a condition that holds for the whole consent.

* NRES and GRU allow any research; HMB allows health, medical and biomedical research,
  which includes disease-specific research but not population-origin or ancestry research
  (DUO's definition of HMB excludes it); DS allows research on its own disease only, so a
  DS term without a recorded disease allows nothing; POA allows ancestry research only.
* NCU refuses commercial use, NPU a requester that is not a not-for-profit organisation,
  NPUNCU both; NPOA refuses ancestry research; NMDS refuses methods development; PUB needs
  the requester's commitment to publish; IRB needs an ethics approval.
* Conditions a program cannot check (collaboration, geography, named users, projects or
  institutions, genetic-studies-only, research-specific restrictions) make the consent
  ineligible for automatic matching, and so does any term this module does not know:
  when in doubt, the donor's data stays out.
* Obligations that do not restrict eligibility (return to database, moratorium, time
  limit, clinical care) are reported with the decision so a release can carry them.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

NRES, GRU, HMB, DS, POA = (
    "DUO:0000004",
    "DUO:0000042",
    "DUO:0000006",
    "DUO:0000007",
    "DUO:0000011",
)
CC, NPOA, NPU, NCU, NPUNCU, NMDS, GSO, RS = (
    "DUO:0000043",
    "DUO:0000044",
    "DUO:0000045",
    "DUO:0000046",
    "DUO:0000018",
    "DUO:0000015",
    "DUO:0000016",
    "DUO:0000012",
)
PUB, COL, IRB, GS, MOR, TS, US, PS, IS, RTN = (
    "DUO:0000019",
    "DUO:0000020",
    "DUO:0000021",
    "DUO:0000022",
    "DUO:0000024",
    "DUO:0000025",
    "DUO:0000026",
    "DUO:0000027",
    "DUO:0000028",
    "DUO:0000029",
)

GENERAL = "general"  # any research, e.g. imaging methods or AI that is not about health
HEALTH = "health"  # health, medical or biomedical research
DISEASE = "disease"  # research on one disease (named by a MONDO or other code)
ANCESTRY = "ancestry"  # population origins or ancestry
PURPOSES = (GENERAL, HEALTH, DISEASE, ANCESTRY)

_COVERS: dict[str, frozenset[str]] = {
    NRES: frozenset(PURPOSES),
    GRU: frozenset(PURPOSES),
    HMB: frozenset({HEALTH, DISEASE}),
    POA: frozenset({ANCESTRY}),
}
_UNCHECKABLE = {
    COL: "collaboration with the data's originators is required",
    GS: "use is restricted to a geographic region",
    US: "use is restricted to named users",
    PS: "use is restricted to a named project",
    IS: "use is restricted to a named institution",
    GSO: "only genetic studies are allowed",
    RS: "research-specific restrictions apply",
}
_OBLIGATIONS = (RTN, MOR, TS, CC)


@dataclass(frozen=True)
class ResearchUse:
    """What a request intends, as the researcher declared it."""

    purpose: str
    disease: str | None = None
    commercial: bool = False
    not_for_profit: bool = False
    publishes: bool = False
    methods_development: bool = False
    ethics_approved: bool = False

    def __post_init__(self) -> None:
        if self.purpose not in PURPOSES:
            raise ValueError(f"purpose must be one of {', '.join(PURPOSES)}")
        if self.purpose == DISEASE and not self.disease:
            raise ValueError("disease-specific research must name the disease")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reasons: tuple[str, ...] = ()
    obligations: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.allowed


def permits(
    terms: Collection[str], use: ResearchUse, diseases: Collection[str] = ()
) -> Decision:
    """Whether a consent granting ``terms`` (and, for DS, ``diseases``) allows ``use``."""
    terms = set(terms)
    reasons = [f"{term} is not a term this portal can match" for term in sorted(terms - KNOWN)]
    if not _permission_covers(terms, use, diseases):
        reasons.append(f"the consent does not allow {use.purpose} research")
    reasons += _modifier_reasons(terms, use)
    obligations = tuple(term for term in _OBLIGATIONS if term in terms)
    return Decision(not reasons, tuple(reasons), obligations)


def _permission_covers(terms: set[str], use: ResearchUse, diseases: Collection[str]) -> bool:
    if any(use.purpose in _COVERS[term] for term in terms if term in _COVERS):
        return True
    return DS in terms and use.purpose == DISEASE and use.disease in set(diseases)


def _modifier_reasons(terms: set[str], use: ResearchUse) -> list[str]:
    reasons = []
    if use.commercial and terms & {NCU, NPUNCU}:
        reasons.append("the consent excludes commercial use")
    if not use.not_for_profit and terms & {NPU, NPUNCU}:
        reasons.append("the consent allows use by not-for-profit organisations only")
    if use.purpose == ANCESTRY and NPOA in terms:
        reasons.append("the consent excludes population origins or ancestry research")
    if use.methods_development and NMDS in terms:
        reasons.append("the consent excludes methods development")
    if PUB in terms and not use.publishes:
        reasons.append("the consent requires the results to be published")
    if IRB in terms and not use.ethics_approved:
        reasons.append("the consent requires an ethics approval")
    reasons += [reason for term, reason in _UNCHECKABLE.items() if term in terms]
    return reasons


KNOWN = frozenset(
    {NRES, GRU, HMB, DS, POA, CC, NPOA, NPU, NCU, NPUNCU, NMDS, GSO, RS}
    | {PUB, COL, IRB, GS, MOR, TS, US, PS, IS, RTN}
)
