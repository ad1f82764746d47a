"""Shifting DA/DT values by a whole number of days, so intervals survive.

Times of day (TM, and the time part of DT) are left as they are: the shift is in whole days,
which keeps a DA/TM pair and the equivalent DT consistent with each other. A value that is not
a date or a time (a name typed into a time field) is emptied, never passed through.
"""

from __future__ import annotations

import datetime as dt
import re

_DA = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_DT = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(.*)$")
# HHMMSS.FFFFFF with trailing components optional; colons as ACR-NEMA wrote them
_TM = re.compile(r"[0-9]{2}(:?[0-9]{2}(:?[0-9]{2}(\.[0-9]{1,6})?)?)?")


def shift_da(value: str, days: int) -> str:
    """Shift one DA value (or a ``from-to`` range); unparsable values become empty."""
    value = value.strip()
    if "-" in value:
        return "-".join(shift_da(part, days) if part else "" for part in value.split("-", 1))
    match = _DA.match(value.replace(".", ""))
    if not match:
        return ""
    try:
        day = dt.date(*(int(g) for g in match.groups()))
        return (day + dt.timedelta(days=days)).strftime("%Y%m%d")
    except (ValueError, OverflowError):
        return ""


def shift_dt(value: str, days: int) -> str:
    """Shift one DT value keeping its precision, time and offset; unparsable become empty."""
    value = value.strip()
    match = _DT.match(value)
    if not match:
        return ""
    year, month, day, rest = match.groups()
    if rest and not re.fullmatch(r"[\d.]*([+-]\d{4})?", rest):
        return ""
    try:
        when = dt.date(int(year), int(month or 1), int(day or 1)) + dt.timedelta(days=days)
    except (ValueError, OverflowError):
        return ""
    shifted = f"{when.year:04d}"
    if month:
        shifted += f"{when.month:02d}"
    if day:
        shifted += f"{when.day:02d}"
    return shifted + (rest or "")


def keep_tm(value: str) -> str:
    """A TM value unchanged if it is a time of day; anything else becomes empty."""
    value = value.strip()
    return value if _TM.fullmatch(value) else ""


def shift_values(values: list[str], vr: str, days: int) -> list[str]:
    """Shift every value of a multi-valued DA/DT element; TM values are kept if they are
    times of day."""
    if vr == "DA":
        return [shift_da(v, days) for v in values]
    if vr == "DT":
        return [shift_dt(v, days) for v in values]
    return [keep_tm(v) for v in values]
