"""The result types of a de-identification run."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Verdict(enum.StrEnum):
    """What the caller may do with the output."""

    DEIDENTIFIED = "deidentified"
    NEEDS_REVIEW = "needs_review"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Outcome:
    """The verdict on one input, with stable machine codes and no PHI."""

    verdict: Verdict
    reason_code: str | None
    reason: str | None
    sop_class_uid: str | None
    modality: str | None
    study_instance_uid: str | None
    series_instance_uid: str | None
    sop_instance_uid: str | None
    options: tuple[str, ...] = ()
    # de-identified metadata for cohort selection (values as written to the output)
    body_part: str | None = None
    patient_sex: str | None = None
    patient_age_years: int | None = None
    study_year: int | None = None  # of the output's StudyDate: shifted when dates are modified

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready view (used by the CLI report)."""
        return {
            "verdict": self.verdict.value,
            "reason_code": self.reason_code,
            "reason": self.reason,
            "sop_class_uid": self.sop_class_uid,
            "modality": self.modality,
            "study_instance_uid": self.study_instance_uid,
            "series_instance_uid": self.series_instance_uid,
            "sop_instance_uid": self.sop_instance_uid,
            "options": list(self.options),
            "body_part": self.body_part,
            "patient_sex": self.patient_sex,
            "patient_age_years": self.patient_age_years,
            "study_year": self.study_year,
        }


class DeidentificationError(Exception):
    """A programming or system error (bad key, unknown option) - never raised for bad input."""


class Rejection(Exception):  # noqa: N818 - an expected outcome, not an error
    """Internal signal: the input cannot be de-identified; carries a stable reason code."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class Review(Exception):  # noqa: N818
    """Internal signal: de-identify, but quarantine the output for a steward."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


REASONS: dict[str, str] = {
    "not_dicom": "The file is not a DICOM image file.",
    "empty": "The file is empty.",
    "truncated": "The file is incomplete; part of it is missing.",
    "dicomdir": "The file is a DICOM folder index (DICOMDIR), not an image.",
    "missing_transfer_syntax": "The file does not say how its contents are encoded.",
    "unsupported_transfer_syntax": "The file uses an encoding this service does not accept.",
    "too_deep": "The file's structure is nested too deeply to be processed safely.",
    "inflation_limit": "The file's compressed contents expand to an unsafe size.",
    "length_exceeds_file": "The file declares more contents than it holds.",
    "header_too_large": "The file's descriptive information is too large to process safely.",
    "malformed": "The file's structure is damaged and cannot be read safely.",
    "pixel_geometry": "The picture in the file is not the size the file says it is, "
    "so the file may be damaged.",
    "missing_sop_class": "The file does not say what kind of object it holds.",
    "unknown_sop_class": "The file holds a kind of object this service does not recognise.",
    "encapsulated_document": "The file holds a document (such as a PDF) that may contain "
    "personal information, so it is not accepted.",
    "raw_data": "The file holds raw device data that may contain personal information, "
    "so it is not accepted.",
    "structured_report": "The file holds a written report that may contain personal "
    "information, so it is not accepted.",
    "non_image": "The file holds a kind of object that may contain personal information, "
    "so it is not accepted.",
    "video": "The file holds video, which this service does not accept.",
    "burned_in_annotation": "The image may have text burned into its pixels; "
    "a data steward will check it before it is shared.",
    "recognizable_features": "The image may show recognisable features such as a face; "
    "a data steward will check it before it is shared.",
    "ultrasound": "Ultrasound images often have text in the picture; "
    "a data steward will check it before it is shared.",
    "secondary_capture": "Screen captures often have text in the picture; "
    "a data steward will check it before it is shared.",
    "photograph": "Photographs and scanned images may show personal information; "
    "a data steward will check it before it is shared.",
    "structured_content": "The report's text was cleaned automatically; "
    "a data steward will check it before it is shared.",
    "overlay_graphics": "The image carries drawn overlays that may contain text; "
    "a data steward will check it before it is shared.",
    "unreadable": "The file could not be read.",
    "internal_error": "The file could not be processed.",
}


def reason_for(code: str) -> str:
    """The donor-facing sentence for a reason code."""
    return REASONS.get(code, REASONS["internal_error"])
