"""The DUO matching rules, as a table: consent terms x declared use -> allowed or not."""

from __future__ import annotations

import pytest

from consent import duo_matching as m
from consent.duo import duo_terms

DIABETES = "MONDO:0005015"
ASTHMA = "MONDO:0004979"
HEALTH = m.ResearchUse(m.HEALTH, publishes=True, ethics_approved=True)
COMMERCIAL_HEALTH = m.ResearchUse(m.HEALTH, commercial=True, publishes=True)
DIABETES_STUDY = m.ResearchUse(m.DISEASE, disease=DIABETES, publishes=True)
ASTHMA_STUDY = m.ResearchUse(m.DISEASE, disease=ASTHMA, publishes=True)
AI_METHODS = m.ResearchUse(m.GENERAL, methods_development=True, publishes=True)
ANCESTRY = m.ResearchUse(m.ANCESTRY, publishes=True)
UNPUBLISHED = m.ResearchUse(m.HEALTH, publishes=False)
FOR_PROFIT = m.ResearchUse(m.HEALTH, not_for_profit=False)
CHARITY = m.ResearchUse(m.HEALTH, not_for_profit=True)

CASES = [
    # (consent terms, diseases, use, allowed)
    ({m.GRU}, (), HEALTH, True),
    ({m.GRU}, (), DIABETES_STUDY, True),  # general research covers disease-specific research
    ({m.GRU}, (), AI_METHODS, True),
    ({m.GRU}, (), ANCESTRY, True),
    ({m.GRU}, (), COMMERCIAL_HEALTH, True),
    ({m.NRES}, (), ANCESTRY, True),
    ({m.HMB}, (), HEALTH, True),
    ({m.HMB}, (), DIABETES_STUDY, True),
    ({m.HMB}, (), AI_METHODS, False),  # not health research
    ({m.HMB}, (), ANCESTRY, False),  # HMB excludes ancestry research
    ({m.DS}, (DIABETES,), DIABETES_STUDY, True),
    ({m.DS}, (DIABETES,), ASTHMA_STUDY, False),  # another disease
    ({m.DS}, (DIABETES,), HEALTH, False),
    ({m.DS}, (), DIABETES_STUDY, False),  # a DS consent without its disease allows nothing
    ({m.POA}, (), ANCESTRY, True),
    ({m.POA}, (), HEALTH, False),
    ({m.GRU, m.NCU}, (), COMMERCIAL_HEALTH, False),  # non-commercial only
    ({m.GRU, m.NCU}, (), HEALTH, True),
    ({m.HMB, m.NPUNCU}, (), COMMERCIAL_HEALTH, False),
    ({m.HMB, m.NPUNCU}, (), CHARITY, True),
    ({m.HMB, m.NPU}, (), FOR_PROFIT, False),
    ({m.HMB, m.NPU}, (), CHARITY, True),
    ({m.GRU, m.NPOA}, (), ANCESTRY, False),
    ({m.GRU, m.NMDS}, (), AI_METHODS, False),
    ({m.GRU, m.NMDS}, (), HEALTH, True),
    ({m.HMB, m.PUB}, (), UNPUBLISHED, False),
    ({m.HMB, m.PUB}, (), HEALTH, True),
    ({m.HMB, m.IRB}, (), UNPUBLISHED, False),  # no ethics approval declared
    ({m.HMB, m.IRB}, (), HEALTH, True),
    ({m.GRU, m.IS}, (), HEALTH, False),  # a named institution cannot be checked here
    ({m.GRU, m.COL}, (), HEALTH, False),
    ({m.GRU, m.GS}, (), HEALTH, False),
    ({m.GRU, m.RTN}, (), HEALTH, True),  # an obligation, not a restriction
    ({m.GRU, "DUO:9999999"}, (), HEALTH, False),  # unknown terms keep the data out
    (set(), (), HEALTH, False),
    # The portal's default template: required HMB+NCU+PUB, optional GRU.
    ({m.HMB, m.NCU, m.PUB}, (), DIABETES_STUDY, True),
    ({m.HMB, m.NCU, m.PUB}, (), COMMERCIAL_HEALTH, False),
    ({m.HMB, m.NCU, m.PUB}, (), AI_METHODS, False),
    ({m.HMB, m.NCU, m.PUB, m.GRU}, (), AI_METHODS, True),
    ({m.HMB, m.NCU, m.PUB, m.GRU}, (), COMMERCIAL_HEALTH, False),  # modifiers bind everything
]


@pytest.mark.parametrize(("terms", "diseases", "use", "allowed"), CASES)
def test_duo_combinations(
    terms: set[str], diseases: tuple, use: m.ResearchUse, allowed: bool
) -> None:
    decision = m.permits(terms, use, diseases)
    assert decision.allowed is allowed
    assert bool(decision.reasons) is not allowed  # a refusal always says why


def test_obligations_are_carried_with_the_decision() -> None:
    decision = m.permits({m.GRU, m.RTN, m.MOR}, HEALTH)
    assert decision.allowed and set(decision.obligations) == {m.RTN, m.MOR}


def test_every_term_the_templates_may_use_is_matched() -> None:
    assert set(duo_terms()) <= m.KNOWN


@pytest.mark.parametrize(
    "arguments", [{"purpose": "astrology"}, {"purpose": m.DISEASE}], ids=["purpose", "disease"]
)
def test_a_use_must_be_well_formed(arguments: dict) -> None:
    with pytest.raises(ValueError):
        m.ResearchUse(**arguments)
