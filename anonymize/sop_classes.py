"""Which kinds of object can be made safe, which need a steward, which are refused."""

from __future__ import annotations

# defined in pydicom._uid_dict and re-exported by pydicom.uid without __all__
from pydicom.uid import UID_dictionary  # type: ignore[attr-defined]

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"

_US = "1.2.840.10008.5.1.4.1.1.6."
REVIEW_PREFIXES: dict[str, str] = {
    _US: "ultrasound",
    "1.2.840.10008.5.1.4.1.1.3.": "ultrasound",  # retired multi-frame US
    "1.2.840.10008.5.1.4.1.1.77.": "photograph",  # VL endoscopy, microscopy, photo, ophthalmic
    "1.2.840.10008.5.1.4.1.1.78.": "photograph",  # ophthalmic measurements with images
    "1.2.840.10008.5.1.4.1.1.81.": "photograph",
    "1.2.840.10008.5.1.4.1.1.82.": "photograph",
    "1.2.840.10008.5.1.4.1.1.7": "secondary_capture",  # SC and multi-frame SC (after 77/78)
}
REVIEW_EXACT: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.6": "ultrasound",
    "1.2.840.10008.5.1.4.1.1.3": "ultrasound",
}
REJECT_PREFIXES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.104.": "encapsulated_document",  # PDF, CDA, STL, OBJ, MTL
    "1.2.840.10008.5.1.4.1.1.66": "raw_data",  # raw data and spatial registration family
    "1.2.840.10008.5.1.4.1.1.88.": "structured_report",
    "1.2.840.10008.5.1.4.1.1.11.": "non_image",  # presentation states carry free text
    "1.2.840.10008.5.1.4.34.": "non_image",  # RT treatment records / procedure protocols
    "1.2.840.10008.5.1.4.38.": "non_image",  # hanging protocols
    "1.2.840.10008.5.1.4.39.": "non_image",  # color palettes
    "1.2.840.10008.5.1.4.43.": "non_image",  # generic implant templates
    "1.2.840.10008.5.1.4.44.": "non_image",
    "1.2.840.10008.5.1.4.45.": "non_image",
}
# Raw data's family prefix also covers registration (66.1-66.6) which holds only geometry.
ALLOWED_EXACT = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.66.1",  # Spatial Registration
        "1.2.840.10008.5.1.4.1.1.66.2",  # Spatial Fiducials
        "1.2.840.10008.5.1.4.1.1.66.3",  # Deformable Spatial Registration
        "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
        "1.2.840.10008.5.1.4.1.1.66.5",  # Surface Segmentation
        "1.2.840.10008.5.1.4.1.1.66.6",  # Tractography Results
        "1.2.840.10008.5.1.4.1.1.66.7",  # Label Map Segmentation
    }
)


def holds_pixels(sop_class_uid: str) -> bool:
    """True for the image storage classes, whose objects cannot exist without pixel data.

    pydicom stops silently at a cut that falls between two elements, so a file that ends
    before its pixel data would otherwise pass for a complete header-only object.
    """
    name = UID_dictionary.get(sop_class_uid, ("",))[0]
    return "Image Storage" in name


def classify(sop_class_uid: str, modality: str, clean_structured_content: bool) -> tuple[str, str]:
    """Return ('ok' | 'review' | 'reject', reason code) for a SOP class and modality."""
    if not sop_class_uid:
        return "reject", "missing_sop_class"
    if sop_class_uid == MEDIA_STORAGE_DIRECTORY:
        return "reject", "dicomdir"
    if sop_class_uid not in UID_dictionary:
        return "reject", "unknown_sop_class"
    if sop_class_uid not in ALLOWED_EXACT:
        for prefix, code in REJECT_PREFIXES.items():
            if sop_class_uid.startswith(prefix) or sop_class_uid == prefix.rstrip("."):
                if code == "structured_report" and clean_structured_content:
                    return "review", "structured_content"
                return "reject", code
    if sop_class_uid in REVIEW_EXACT:
        return "review", REVIEW_EXACT[sop_class_uid]
    for prefix, code in REVIEW_PREFIXES.items():
        if sop_class_uid.startswith(prefix):
            return "review", code
    if modality.upper() == "US":
        return "review", "ultrasound"
    if modality.upper() in ("SC", "XC", "OT") and ".1.1.7" in sop_class_uid:
        return "review", "secondary_capture"
    return "ok", ""
