"""``deidentify``: one input in, one verdict out, never an exception for bad input."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any, BinaryIO, Protocol, TypeVar, runtime_checkable

from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import WriteableBuffer
from pydicom.tag import Tag

from anonymize import (
    encoder,
    engine,
    identifiers,
    keys,
    pixel_geometry,
    reader,
    sop_classes,
    values,
    writer,
)
from anonymize.context import Context
from anonymize.outcome import (
    DeidentificationError,
    Outcome,
    Rejection,
    Verdict,
    reason_for,
)
from anonymize.profile import BASIC_PROFILE_CODE, OPTION_CODES, Profile

log = logging.getLogger(__name__)
PATIENT_NAME, PATIENT_ID = 0x00100010, 0x00100020
IDENTITY_REMOVED = 0x00120062  # Patient Identity Removed
METHOD = 0x00120063  # De-identification Method
METHOD_CODES = 0x00120064  # De-identification Method Code Sequence
TEMPORAL_MODIFIED = 0x00280303  # Longitudinal Temporal Information Modified
PIXEL_DATA = 0x7FE00010  # what follows the pixel data comes after it in tag order too
SIMPLE_CHARSETS = frozenset({"", "ISO_IR 6", "ISO_IR 100", "ISO 2022 IR 6"})


def _string(ds: Dataset, keyword: str) -> str:
    """A UI or CS value (several values joined by a backslash), read without conversion."""
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword  # only called with keywords of the data dictionary
    return "\\".join(values.ascii_values(ds, tag)).strip()


def _rejected(code: str, profile: Profile) -> Outcome:
    return Outcome(Verdict.REJECTED, code, reason_for(code), None, None, None, None, None,
                   profile.ordered())


def _set_identity(ds: Dataset, pseudonym: str, profile: Profile, implicit: bool,
                  little_endian: bool) -> None:
    """PatientName/ID become the pseudonym; the de-identification is recorded (CID 7050)."""
    if pseudonym.isascii():
        values.set_ascii(ds, PATIENT_NAME, "PN", [pseudonym])
        values.set_ascii(ds, PATIENT_ID, "LO", [pseudonym])
    else:
        ds.PatientName = pseudonym
        ds.PatientID = pseudonym
    values.set_ascii(ds, IDENTITY_REMOVED, "CS", ["YES"])
    options = profile.ordered()
    values.set_ascii(ds, METHOD, "LO", _method_meanings(options))
    ds[METHOD_CODES] = _method_codes(options, implicit, little_endian)
    if "retain_long_modified_dates" in profile:
        temporal = "MODIFIED"
    elif "retain_long_full_dates" in profile:
        temporal = "UNMODIFIED"
    else:
        temporal = "REMOVED"
    values.set_ascii(ds, TEMPORAL_MODIFIED, "CS", [temporal])


def _codes(options: tuple[str, ...]) -> list[tuple[str, str]]:
    return [BASIC_PROFILE_CODE] + [OPTION_CODES[name] for name in options]


@lru_cache(maxsize=256)
def _method_meanings(options: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(meaning for _, meaning in _codes(options))


@lru_cache(maxsize=256)
def _method_codes(options: tuple[str, ...], implicit: bool,
                  little_endian: bool) -> RawDataElement:
    """DeidentificationMethodCodeSequence, encoded once per profile and transfer syntax: it is
    the same in every file, and building its items is a tenth of a header's work."""
    items = []
    for value, meaning in _codes(options):
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        items.append(item)
    encoded = encoder.encode_items(items, implicit, little_endian)
    return RawDataElement(Tag(METHOD_CODES), "SQ", len(encoded), encoded, 0, implicit,
                          little_endian)


def _simple_charset(ds: Dataset) -> bool:
    value = ds.get_item(0x00080005)
    if value is None:
        return True
    charset = ds.get("SpecificCharacterSet", "")
    values = [charset] if isinstance(charset, str) else list(charset)
    return all(str(v).strip() in SIMPLE_CHARSETS for v in values)


def _process(parsed: reader.Parsed, dst: WriteableBuffer, key: bytes, pseudonym: str,
             profile: Profile) -> Outcome:
    ds = parsed.dataset
    sop_class = _string(ds, "SOPClassUID") or parsed.meta_sop_class
    modality = _string(ds, "Modality")
    verdict, code = sop_classes.classify(sop_class, modality,
                                         "clean_structured_content" in profile)
    if verdict == "reject":
        raise Rejection(code)
    if not parsed.pixels and sop_classes.holds_pixels(sop_class):
        raise Rejection("truncated")
    pixel_geometry.check(ds, parsed.transfer_syntax.is_encapsulated, parsed.pixels)
    review: set[str] = {code} if verdict == "review" else set()
    if _string(ds, "BurnedInAnnotation").upper() == "YES":
        review.add("burned_in_annotation")
    if _string(ds, "RecognizableVisualFeatures").upper() == "YES":
        review.add("recognizable_features")
    simple_charset = _simple_charset(ds)
    ctx = Context(
        uid_key=keys.donor_uid_key(key, pseudonym),
        options=profile.options,
        shift_days=keys.date_shift_days(key, pseudonym),
        identifiers=identifiers.collect(ds, pseudonym, simple_charset),
        size=parsed.size,
        stream=parsed.stream,
    )
    walker = engine.Walker(ctx, simple_charset)
    walker.walk(ds)
    if parsed.tail is not None:
        walker.walk(parsed.tail, after=PIXEL_DATA)
    review |= ctx.review
    _set_identity(ds, pseudonym, profile, parsed.implicit, parsed.little_endian)
    sop_instance = _string(ds, "SOPInstanceUID")
    if not sop_instance:
        raise Rejection("malformed")
    ds.SOPClassUID = sop_class
    meta = writer.file_meta(sop_class, sop_instance, str(parsed.transfer_syntax))
    writer.write_file(dst, meta, ds, parsed.stream, parsed.pixels, parsed.tail,
                      parsed.implicit, parsed.little_endian)
    review_code = _first_review_code(review)
    return Outcome(
        Verdict.NEEDS_REVIEW if review_code else Verdict.DEIDENTIFIED,
        review_code,
        reason_for(review_code) if review_code else None,
        sop_class,
        modality or None,
        _string(ds, "StudyInstanceUID") or None,
        _string(ds, "SeriesInstanceUID") or None,
        sop_instance,
        profile.ordered(),
        _string(ds, "BodyPartExamined") or None,
        _string(ds, "PatientSex") or None,
        _age_years(_string(ds, "PatientAge")),
        _year(_string(ds, "StudyDate")),
    )


_AGE = re.compile(r"^(\d{3})([DWMY])$")
_DAYS_PER_UNIT = {"D": 1, "W": 7, "M": 30.4375, "Y": 365.25}


def _age_years(value: str) -> int | None:
    """Whole years of an AS value ("052Y", "006M"); None when absent or not an age."""
    match = _AGE.match(value)
    if not match:
        return None
    return int(int(match.group(1)) * _DAYS_PER_UNIT[match.group(2)] // 365.25)


def _year(value: str) -> int | None:
    return int(value[:4]) if re.match(r"^\d{8}$", value) and value[:4] != "0000" else None


REVIEW_ORDER = ("burned_in_annotation", "recognizable_features", "ultrasound",
                "secondary_capture", "photograph", "structured_content", "overlay_graphics")


def _first_review_code(codes: set[str]) -> str | None:
    for code in REVIEW_ORDER:
        if code in codes:
            return code
    return next(iter(sorted(codes)), None)


def deidentify(
    src: str | os.PathLike[str] | BinaryIO,
    dst: BinaryIO,
    *,
    key: bytes,
    pseudonym: str,
    profile: Profile | None = None,
) -> Outcome:
    """De-identify one DICOM file from ``src`` into ``dst``.

    Never raises for bad input: every problem with the input is an Outcome with verdict
    REJECTED and a reason_code. ``src`` may be a path or a readable, seekable binary stream;
    on REJECTED the caller discards whatever was written to ``dst``. ``key`` (>= 32 bytes) keys,
    with the pseudonym, the UID remapping (HMAC -> 2.25.<int>, per donor) and the donor's date
    offset.

    What is not the input's fault is never a rejection: an exception raised by the ``src`` or
    ``dst`` stream itself (a full disk, a failing storage backend, a quota) propagates
    unchanged, as do MemoryError and KeyboardInterrupt. Raises :class:`DeidentificationError`
    for a bad key, pseudonym or profile.
    """
    key = keys.check_key(key)
    if not isinstance(pseudonym, str) or not pseudonym.strip():
        raise DeidentificationError("pseudonym must be a non-empty string")
    profile = profile or Profile.default()
    if isinstance(src, str | os.PathLike):
        try:
            handle = open(src, "rb")  # noqa: SIM115 - closed below
        except OSError:
            return _rejected("unreadable", profile)
        with handle:
            return _guarded(handle, dst, key, pseudonym, profile)
    return _guarded(src, dst, key, pseudonym, profile)


_T = TypeVar("_T")


@runtime_checkable
class _ReadsInto(Protocol):
    """A stream that fills a caller's buffer (``typing.BinaryIO`` does not declare it)."""

    def readinto(self, buffer: bytearray | memoryview, /) -> int | None: ...


class _Watched:
    """The caller's stream, remembering the first exception the stream itself raised.

    Such an exception (ENOSPC, EIO, a storage backend's error) says nothing about the input,
    even when the parser turns it into an error of its own on the way up.
    """

    __slots__ = ("_stream", "failure")

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.failure: BaseException | None = None

    def _call(self, method: Callable[..., _T], *args: Any) -> _T:
        try:
            return method(*args)
        except RecursionError:  # the input's nesting exhausted the stack, not the stream
            raise
        except BaseException as exc:
            if self.failure is None:
                self.failure = exc
            raise

    def read(self, *args: Any) -> bytes:
        return self._call(self._stream.read, *args)

    def readinto(self, buffer: bytearray | memoryview) -> int | None:
        stream = self._stream
        if not isinstance(stream, _ReadsInto):  # as the attribute lookup itself would fail
            raise AttributeError(f"{type(stream).__name__!r} object has no attribute 'readinto'")
        return self._call(stream.readinto, buffer)

    def seek(self, *args: Any) -> int:
        return self._call(self._stream.seek, *args)

    def tell(self) -> int:
        return self._call(self._stream.tell)

    def write(self, data: Any) -> int:
        return self._call(self._stream.write, data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _guarded(src: BinaryIO, dst: BinaryIO, key: bytes, pseudonym: str,
             profile: Profile) -> Outcome:
    source, sink = _Watched(src), _Watched(dst)
    try:
        parsed = reader.parse(source)
        return _process(parsed, sink, key, pseudonym, profile)
    except Exception as exc:
        failure = source.failure or sink.failure
        if failure is exc:
            raise
        if failure is not None:  # the parser turned a stream's own error into another
            raise failure  # noqa: B904 - the stream's error is the one to report
        if isinstance(exc, MemoryError):  # the machine is short of memory, not the file bad
            raise
        return _rejection(exc, profile)


def _rejection(exc: Exception, profile: Profile) -> Outcome:
    """The REJECTED outcome for an error caused by the input itself."""
    if isinstance(exc, Rejection):
        return _rejected(exc.code, profile)
    if isinstance(exc, RecursionError):
        return _rejected("too_deep", profile)
    if isinstance(exc, EOFError | OSError):  # the parser ran out of input
        return _rejected("truncated", profile)
    log.info("input rejected as malformed (%s)", type(exc).__name__)
    return _rejected("malformed", profile)
