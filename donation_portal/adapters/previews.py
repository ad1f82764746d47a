"""Previews of de-identified DICOM files for the data stewards: pixels to an 8-bit PNG.

A steward decides whether a held image shows identifying text, so the preview must show the
pixels as a viewer would: the modality LUT (rescale slope and intercept), then the file's
VOI window (or a default), MONOCHROME1 inverted; colour images (ultrasound, screen captures)
as they are; a multi-frame image as a strip of frames spread over the series. Compressed
transfer syntaxes are decoded by pydicom's pixel decoders (pylibjpeg for JPEG and JPEG 2000,
pydicom itself for RLE).

Everything happens in memory: the caller hands over the plaintext and gets the PNG bytes
back, nothing is written to disk or cached. The PNG writer is a few lines of zlib and struct
instead of an imaging library: an 8-bit greyscale or RGB image is all it ever writes.
"""

from __future__ import annotations

import io
import logging
import math
import struct
import zlib
from dataclasses import dataclass
from xml.sax.saxutils import escape

import numpy as np
from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

# the defining modules: pydicom.pixels re-exports these without an __all__
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut

MAX_EDGE = 1024  # the longest edge of a single-frame preview, in pixels
STRIP_FRAMES = 8  # at most this many frames of a multi-frame image, side by side
STRIP_EDGE = 256  # the longest edge of each frame in a strip
# When a greyscale file names no window: CT in Hounsfield units gets a soft-tissue window
# (burned-in text is drawn bright, so it stays white); anything else its own range.
DEFAULT_WINDOWS = {"CT": (40.0, 400.0)}

log = logging.getLogger(__name__)


class Unrenderable(Exception):
    """The pixels cannot be shown; the message is safe to show (it names no value of the
    file but its transfer syntax)."""


@dataclass(frozen=True)
class Rendered:
    """A preview and what a steward needs to read it."""

    png: bytes
    frames: int  # in the file; the strip shows at most STRIP_FRAMES of them
    rows: int
    columns: int


def render(data: bytes) -> Rendered:
    """The PNG preview of the DICOM file ``data``; Unrenderable if it has no pixels, or
    pixels no decoder here can read."""
    try:
        dataset = dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, ValueError, TypeError) as error:
        raise Unrenderable("The stored file could not be read as DICOM.") from error
    if "PixelData" not in dataset:
        raise Unrenderable("This file holds no image.")
    frames = max(int(dataset.get("NumberOfFrames") or 1), 1)
    indices = shown_frames(frames)
    edge = MAX_EDGE if len(indices) == 1 else STRIP_EDGE
    images = [downscale(to_8bit(_decode(dataset, index), dataset), edge) for index in indices]
    height = min(image.shape[0] for image in images)
    strip = np.concatenate([image[:height] for image in images], axis=1)
    return Rendered(encode_png(strip), frames, int(dataset.Rows), int(dataset.Columns))


def shown_frames(frames: int) -> list[int]:
    """The indices of the frames a strip shows: all of them, or STRIP_FRAMES spread evenly
    from the first to the last (text is often on one frame only, not on the first)."""
    if frames <= STRIP_FRAMES:
        return list(range(frames))
    return [round(i * (frames - 1) / (STRIP_FRAMES - 1)) for i in range(STRIP_FRAMES)]


def _decode(dataset: Dataset, index: int) -> np.ndarray:
    """One frame, decoded alone (a long series is never decoded whole); YBR colour comes
    back as RGB."""
    syntax = dataset.file_meta.get("TransferSyntaxUID")
    try:
        array, _ = get_decoder(syntax).as_array(dataset, index=index)
    except Exception as error:  # noqa: BLE001 - every decoder failure is the same for a steward
        # the exception's text may quote the file's values: only its type is logged
        log.warning("preview: pixel data not decodable (%s)", type(error).__name__)
        name = getattr(syntax, "name", "an unknown transfer syntax")
        raise Unrenderable(f"The pixel data could not be decoded ({name}).") from error
    return array


def to_8bit(pixels: np.ndarray, dataset: Dataset) -> np.ndarray:
    """A frame as 8-bit greyscale (modality LUT, VOI window, MONOCHROME1 inverted) or 8-bit
    RGB (colour as stored; palette colour through its lookup table)."""
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, dataset)
    if pixels.ndim == 3:  # stored colour, 8 bits as is; 16 bits (palettes) by their top byte
        return (pixels >> 8 if pixels.max() > 255 else pixels).astype(np.uint8)
    values = np.asarray(apply_modality_lut(pixels, dataset), dtype=np.float64)
    low, high = _window(values, dataset)
    grey = _stretch(values, low, high)
    return 255 - grey if photometric == "MONOCHROME1" else grey


def _window(values: np.ndarray, dataset: Dataset) -> tuple[float, float]:
    """The VOI window's lowest and highest value: the file's first window, the modality's
    default, or the frame's own range."""
    centre, width = _first(dataset.get("WindowCenter")), _first(dataset.get("WindowWidth"))
    if centre is None or width is None or width <= 0:
        centre, width = DEFAULT_WINDOWS.get(str(dataset.get("Modality", "")), (None, None))
    if centre is None or width is None:
        return float(values.min()), float(values.max())
    return centre - width / 2, centre + width / 2


def _first(value: object) -> float | None:
    if isinstance(value, MultiValue):
        value = value[0] if value else None
    try:
        return float(value) if value is not None and value != "" else None  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _stretch(values: np.ndarray, low: float, high: float) -> np.ndarray:
    span = high - low if high > low else 1.0
    return (np.clip((values - low) / span, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def downscale(image: np.ndarray, edge: int) -> np.ndarray:
    """``image`` averaged down by a whole factor until its longest edge is at most ``edge``
    (block averages keep thin text legible, unlike skipping pixels)."""
    factor = math.ceil(max(image.shape[:2]) / edge)
    if factor <= 1:
        return image
    height, width = image.shape[0] // factor, image.shape[1] // factor
    cropped = image[: height * factor, : width * factor].astype(np.float64)
    blocks = cropped.reshape(height, factor, width, factor, *image.shape[2:])
    averaged: np.ndarray = blocks.mean(axis=(1, 3))
    return (averaged + 0.5).astype(np.uint8)


def encode_png(image: np.ndarray) -> bytes:
    """An 8-bit greyscale (2-D) or RGB (rows × columns × 3) array as PNG bytes."""
    height, width = image.shape[:2]
    colour_type = 2 if image.ndim == 3 else 0
    scanlines = np.zeros((height, 1 + image[0].size), dtype=np.uint8)  # filter byte 0: none
    scanlines[:, 1:] = image.reshape(height, -1)
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 6)),
            _chunk(b"IEND", b""),
        )
    )


def _chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body)
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def placeholder_svg(message: str) -> bytes:
    """An image saying why there is no preview, shown where the preview would be."""
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="384" height="96" viewBox="0 0 384 96">'
        '<rect width="384" height="96" fill="#eee" stroke="#999"/>'
        '<text x="192" y="44" font-family="sans-serif" font-size="13" text-anchor="middle">'
        "No preview</text>"
        '<text x="192" y="66" font-family="sans-serif" font-size="11" text-anchor="middle">'
        f"{escape(message)}</text></svg>"
    ).encode()
