"""DICOM de-identification engine: PS3.15 Annex E Basic Profile with options, recursively.

Public API::

    from anonymize import deidentify, Profile, Outcome, Verdict, DeidentificationError
"""

from anonymize.core import deidentify
from anonymize.outcome import DeidentificationError, Outcome, Verdict
from anonymize.profile import OPTIONS, Profile

__all__ = ["OPTIONS", "DeidentificationError", "Outcome", "Profile", "Verdict", "deidentify"]
