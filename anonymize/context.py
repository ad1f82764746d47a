"""What the walk over one file needs to know about the run, the donor and the file."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom.filebase import ReadableBuffer


@dataclass
class Context:
    """Everything the walk needs about this run and this file.

    ``uid_key`` is the donor's UID key (``keys.donor_uid_key``), not the deployment secret:
    the remapped UIDs of two donors can then never be matched with each other.
    """

    uid_key: bytes
    options: frozenset[str]
    shift_days: int
    identifiers: tuple[str, ...] = ()
    size: int = 0
    stream: ReadableBuffer | None = None
    review: set[str] = field(default_factory=set)

    @property
    def modified_dates(self) -> bool:
        return "retain_long_modified_dates" in self.options

    @property
    def full_dates(self) -> bool:
        return "retain_long_full_dates" in self.options
