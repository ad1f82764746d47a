"""Clean Descriptors: keep imaging vocabulary, drop everything not known to be safe.

Two strengths of cleaning:

* :func:`clean_free_text` (descriptions, comments, protocol names, SR text): generic patterns
  (e-mail, URL, phone numbers, dates, honorific + following names) and this patient's own
  identifiers are removed first; then every word survives only if each alphabetic run of it is
  on the allow-list ``data/imaging_vocabulary.txt`` and each digit run has at most four digits
  (a standalone 19xx/20xx year is dropped). A word is a run of letters and digits of any
  script, so a name in Cyrillic, Greek or CJK characters is a word like any other; between
  words only whitespace and ASCII punctuation survive. Unknown names and codes therefore never
  survive, whatever their alphabet.
* :func:`scrub_identifiers` (short technical strings outside the table, kept private values):
  the same patterns and patient identifiers are removed, other tokens are kept.
"""

from __future__ import annotations

import re
import string
import unicodedata
from functools import lru_cache
from importlib import resources

# Letters and digits of every script (``[^\W_]``): a word that is not matched here would pass
# between the words unchecked.
_WORD_SPLIT = re.compile(r"([^\W_]+(?:\.[0-9]+)?)")
_NOT_A_SEPARATOR = re.compile(rf"[^\s{re.escape(string.punctuation)}]")
_RUNS = re.compile(r"[^\W\d_]+|\d+(?:\.\d+)?")
_YEAR = re.compile(r"^(19|20)\d\d$")
# Matched before this patient's identifiers, which could otherwise break them apart.
_EARLY = [
    re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+"),  # e-mail
    re.compile(r"(https?://|www\.)\S+", re.IGNORECASE),  # URL
]
_PATTERNS = [
    # honorifics and the (up to three) words after them, matched before numbers are blanked
    # (so a blanked phone number does not make the next imaging word look like a name);
    # MR, MS, DR and SR are also imaging terms, so in capitals they count only with a full stop
    re.compile(
        r"(\b(?i:mrs|miss|mx|prof|sir|dame|herr|frau|mme|mlle|sra|dott|dre)\b\.?"
        r"|\b(Dr|Mr|Ms|Sr|dr|mr|ms)\b\.?|\b(?i:dr|mr|ms|sr)\.)"
        r"(\s+[^\W\d_][\w'-]*){0,3}"
    ),
    # dates: 2021-03-04, 04/03/2021, 4.3.21, 2021/03/04, 20210304
    re.compile(r"\b\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}\b"),
    re.compile(
        r"\b\d{1,2}\s*(jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
        r"(\s*\d{2,4})?\b",
        re.IGNORECASE,
    ),
    re.compile(
        r"\b(jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?\s*\d{1,2}"
        r"(st|nd|rd|th)?,?(\s*\d{2,4})?\b",
        re.IGNORECASE,
    ),
    # phone numbers: 7+ digits with separators
    re.compile(r"\+?\(?\d[\d\s().-]{6,}\d"),
    re.compile(r"\d{5,}"),  # long digit runs: IDs, MRNs, accession numbers, compact dates
]


@lru_cache(maxsize=1)
def vocabulary() -> frozenset[str]:
    """The allow-list, as lower-case alphabetic runs."""
    text = resources.files("anonymize").joinpath("data/imaging_vocabulary.txt").read_text(
        encoding="utf-8"
    )
    words: set[str] = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        for entry in line.split():
            words.update(run.lower() for run in re.findall(r"[^\W\d_]+", entry))
    return frozenset(words)


@lru_cache(maxsize=4096)
def identifier_pattern(identifiers: tuple[str, ...]) -> re.Pattern[str] | None:
    """One case-insensitive pattern matching any of this patient's identifiers."""
    parts = sorted({i for i in identifiers if len(i) >= 2}, key=len, reverse=True)
    if not parts:
        return None
    alternatives = "|".join(re.escape(p) for p in parts)
    return re.compile(rf"(?<![A-Za-z0-9])({alternatives})(?![A-Za-z0-9])", re.IGNORECASE)


def _remove_patterns(text: str, identifiers: tuple[str, ...], generic: bool = True) -> str:
    if generic:
        for regex in _EARLY:
            text = regex.sub(" ", text)
    pattern = identifier_pattern(identifiers)
    if pattern is not None:
        text = pattern.sub(" ", text)
    if generic:
        for regex in _PATTERNS:
            text = regex.sub(" ", text)
    return text


def _word_is_safe(word: str, words: frozenset[str]) -> bool:
    if _YEAR.match(word):
        return False
    for run in _RUNS.findall(word):
        if run[0].isdigit():
            if len(run.split(".", 1)[0]) > 4:
                return False
        elif run.lower() not in words:
            return False
    return True


def _tidy(text: str) -> str:
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"([_\-/,;:.])(\s*\1)+", r"\1", text)
    text = re.sub(r"\(\s*\)|\[\s*\]", " ", text)
    text = re.sub(r"\s+", " ", text)
    return text.strip(" _-/,;:.|^=")


def _kept_piece(index: int, piece: str, words: frozenset[str]) -> str:
    """Pieces alternate separator, word, separator...: a word survives if it is safe, a
    separator keeps only whitespace and punctuation (a combining accent or a symbol left over
    between two dropped words says nothing useful and could say something identifying)."""
    if index % 2 == 0:
        return _NOT_A_SEPARATOR.sub(" ", piece)
    return piece if _word_is_safe(piece, words) else " "


@lru_cache(maxsize=65536)
def clean_free_text(text: str, identifiers: tuple[str, ...] = ()) -> str:
    """Keep only allow-listed imaging vocabulary of ``text``.

    The text is first put in composed form (NFC), so an accented letter written as a letter plus
    a combining accent is one letter of its word, as it is in the allow-list.
    """
    text = _remove_patterns(unicodedata.normalize("NFC", text), identifiers)
    words = vocabulary()
    pieces = _WORD_SPLIT.split(text)
    return _tidy("".join(_kept_piece(i, piece, words) for i, piece in enumerate(pieces)))


@lru_cache(maxsize=65536)
def scrub_identifiers(text: str, identifiers: tuple[str, ...] = (), generic: bool = True) -> str:
    """Remove this patient's identifiers (and, if ``generic``, identifying patterns such as
    dates, phone numbers and long digit runs); keep the rest."""
    cleaned = _remove_patterns(text, identifiers, generic)
    if cleaned == text:
        return text
    return _tidy(cleaned)
