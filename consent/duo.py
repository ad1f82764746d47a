"""The GA4GH Data Use Ontology terms the portal supports, read from consent/data/duo_terms.yaml."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml

DUO_SYSTEM = "http://purl.obolibrary.org/obo/duo.owl"
PERMISSION = "permission"
MODIFIER = "modifier"


@dataclass(frozen=True)
class DuoTerm:
    id: str
    shorthand: str
    kind: str
    labels: dict[str, str]
    qualifier: str | None = None

    def label(self, language: str = "en") -> str:
        return self.labels.get(language) or self.labels["en"]

    @property
    def iri(self) -> str:
        return "http://purl.obolibrary.org/obo/" + self.id.replace(":", "_")


@cache
def duo_terms() -> dict[str, DuoTerm]:
    """Supported terms by ID (e.g. ``"DUO:0000042"``)."""
    text = resources.files("consent").joinpath("data/duo_terms.yaml").read_text("utf-8")
    table = {}
    for row in yaml.safe_load(text):
        term = DuoTerm(
            id=row["id"],
            shorthand=row["shorthand"],
            kind=row["kind"],
            labels=dict(row["label"]),
            qualifier=row.get("qualifier"),
        )
        table[term.id] = term
    return table
