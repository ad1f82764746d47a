"""Convert the shared PS3.15 Table E.1-1 copy and TCIA's private tag knowledge base into the
data files that ship inside ``anonymize/data/``.

Usage: python scripts/build_deid_tables.py [--shared DIR] [--out DIR]

The engine reads only the generated files, so the table it applies is exactly the standard's
table; rerunning this script after a new DICOM edition reproduces them.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SHARED = ROOT.parent / "shared" / "dicom"
DEFAULT_OUT = ROOT / "anonymize" / "data"

PROFILE_SOURCE = "confidentiality_profile_attributes.json"
PRIVATE_SOURCE = "TCIAPrivateTagKB-02-01-2024-formatted.csv"

# Column of the shared JSON -> option name used by the engine (see anonymize/profile.py).
OPTION_COLUMNS = {
    "rtnLongFullDatesOpt": "retain_long_full_dates",
    "rtnLongModifDatesOpt": "retain_long_modified_dates",
    "rtnPatCharsOpt": "retain_patient_chars",
    "rtnDevIdOpt": "retain_device_id",
    "rtnInstIdOpt": "retain_institution_id",
    "rtnUIDsOpt": "retain_uids",
    "rtnSafePrivOpt": "retain_safe_private",
    "cleanDescOpt": "clean_descriptors",
    "cleanStructContOpt": "clean_structured_content",
    "cleanGraphOpt": "clean_graphics",
}
BASIC_ACTIONS = {"D", "Z", "X", "K", "C", "U", "X/Z", "X/D", "X/Z/D", "Z/D", "X/Z/U*"}
TAG_RE = re.compile(r"^\(([0-9A-FX]{4}),([0-9A-FX]{4})\)$")
COMPONENT_SPLIT = re.compile(r"\[<\d+>\]")


def build_profile(rows: list[dict]) -> dict:
    """Return the attribute rules keyed by tag plus the masked (50xx/60xx/private) rows."""
    attributes: dict[str, dict] = {}
    patterns: list[dict] = []
    for row in rows:
        basic = row["basicProfile"].strip()
        if basic not in BASIC_ACTIONS:
            raise ValueError(f"unknown basic profile action {basic!r} for {row['tag']}")
        options = {
            OPTION_COLUMNS[col]: row[col].strip()
            for col in OPTION_COLUMNS
            if row.get(col, "").strip()
        }
        entry = {"name": row["name"], "basic": basic, "options": options}
        match = TAG_RE.match(row["tag"].strip().upper())
        if match is None:
            if "GGGG" in row["tag"].upper():
                patterns.append({"mask": "private", **entry})
                continue
            raise ValueError(f"unparsable tag {row['tag']!r}")
        group, element = match.groups()
        if "X" in group or "X" in element:
            patterns.append({"mask": f"{group}{element}", **entry})
        else:
            attributes[f"{group}{element}"] = entry
    return {
        "source": "DICOM PS3.15 Table E.1-1 (2024b) via " + PROFILE_SOURCE,
        "attributes": dict(sorted(attributes.items())),
        "patterns": patterns,
    }


def _component(text: str) -> str:
    """Normalise one '(gggg,creator,ee)' or '(gggg,eeee)' component of a KB signature."""
    inner = text.strip()
    if inner.startswith("(") and inner.endswith(")"):
        inner = inner[1:-1]
    group, _, rest = inner.partition(",")
    if "," not in rest:
        return f"{group.lower()},{rest.strip().lower()}"
    creator, _, element = rest.rpartition(",")
    creator = creator.strip().strip('"').strip().lower()
    return f"{group.lower()},{creator},{element.strip().lower()[-2:]}"


def build_private(rows: list[list[str]]) -> dict:
    """Map each private signature to 'k' (keep), 'h' (remap UID), 'o' (shift date) or 'd'.

    A signature listed with several VRs or dispositions is kept only if every row keeps it.
    Signatures without a creator cannot be matched reliably and are left out (so deleted).
    """
    dispositions: dict[str, set[str]] = {}
    for row in rows:
        if len(row) < 4:
            continue
        pattern, _name, _vr, disposition = row[:4]
        parts = COMPONENT_SPLIT.split(pattern)
        signature = "/".join(_component(p) for p in parts if p.strip())
        if ",," in signature:
            continue
        code = disposition.strip().lower()
        dispositions.setdefault(signature, set()).add(code)
    result = {}
    for signature, codes in sorted(dispositions.items()):
        if codes == {"k"}:
            result[signature] = "k"
        elif codes == {"h"}:
            result[signature] = "h"
        elif codes == {"o"}:
            result[signature] = "o"
    return {
        "source": "TCIA private tag knowledge base via " + PRIVATE_SOURCE,
        "note": "signatures not listed here are deleted",
        "signatures": result,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    rows = json.loads((args.shared / PROFILE_SOURCE).read_text(encoding="utf-8"))
    profile = build_profile(rows)
    with (args.shared / PRIVATE_SOURCE).open(encoding="utf-8-sig", newline="") as handle:
        private_rows = list(csv.reader(handle))[1:]
    private = build_private(private_rows)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in (
        ("confidentiality_profile.json", profile),
        ("safe_private_tags.json", private),
    ):
        (args.out / name).write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    print(
        f"{len(profile['attributes'])} attributes, {len(profile['patterns'])} patterns, "
        f"{len(private['signatures'])} retained private signatures"
    )


if __name__ == "__main__":
    main()
